"""Embeddings through Amazon Bedrock's InvokeModel (``POST {base}/model/{id}/invoke``), signed like the
Converse calls (:mod:`.bedrock`: SigV4 with ``ACCESS_KEY_ID:SECRET``, or a Bedrock API key as Bearer).

Model families (by the model id's prefix):

* ``amazon.titan-embed-text-v2*`` — ``{inputText, dimensions (256 | 512 | 1024), normalize: true}`` →
  ``{embedding, inputTextTokenCount}``; ``amazon.titan-embed-text-v1`` takes ``inputText`` only. Titan
  embeds one text per call: the inputs are sent as parallel calls (at most :data:`PARALLEL` at once)
  and the token counts summed.
* ``cohere.embed-*`` — ``{texts (≤ 96 per call), input_type (default search_document), truncate: END}``
  → ``{embeddings}``; the tokens are the ``X-Amzn-Bedrock-Input-Token-Count`` response header.

Token-id inputs are refused (400 naming ``input``): Bedrock's embedding models take text.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from aistats_gateway.providers import _http
from aistats_gateway.providers.base import CallContext, ProviderError
from aistats_gateway.providers.bedrock import PROVIDER_ID, _auth, _url
from aistats_gateway.providers.inference import EmbeddingsRequest, EmbeddingsResult, raise_for

PARALLEL = 8
COHERE_BATCH = 96
TITAN_V2_DIMENSIONS = (256, 512, 1024)


async def invoke(ctx: CallContext, model: str, body: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    """One InvokeModel call: the JSON answer and the ``X-Amzn-Bedrock-Input-Token-Count`` header."""
    url = _url(ctx, model, "invoke")
    raw = orjson.dumps(body)
    resp = await _http.send(ctx.http, "POST", url, provider=PROVIDER_ID, content=raw,
                            headers={"content-type": "application/json", "accept": "application/json",
                                     **_auth(ctx, url, raw)})
    raise_for(resp, resp.content, PROVIDER_ID)
    header = resp.headers.get("x-amzn-bedrock-input-token-count")
    return _http.json_object(resp, PROVIDER_ID), int(header) if header and header.isdigit() else None


def _texts(req: EmbeddingsRequest) -> list[str]:
    if not all(isinstance(x, str) for x in req.inputs):
        raise ProviderError("client", "amazon-bedrock embedding models take text, not token ids", param="input",
                            code="unsupported_input")
    return [str(x) for x in req.inputs]


def _floats(value: Any) -> list[float]:
    if not isinstance(value, list) or not value:
        raise ProviderError("upstream", "amazon-bedrock returned no embedding", code="invalid_upstream_response")
    return [float(x) for x in value]


class BedrockEmbeddings:
    provider_id = PROVIDER_ID

    async def embed(self, req: EmbeddingsRequest, ctx: CallContext) -> EmbeddingsResult:
        texts = _texts(req)
        if req.model.startswith("cohere.embed"):
            return await self._cohere(req, texts, ctx)
        if req.model.startswith("amazon.titan-embed-text"):
            return await self._titan(req, texts, ctx)
        raise ProviderError("client", f"amazon-bedrock: {req.model} is not an embeddings model this gateway knows",
                            param="model", code="unsupported_model")

    async def _titan(self, req: EmbeddingsRequest, texts: list[str], ctx: CallContext) -> EmbeddingsResult:
        v2 = "-v2" in req.model
        if req.dimensions is not None and (not v2 or req.dimensions not in TITAN_V2_DIMENSIONS):
            allowed = ", ".join(map(str, TITAN_V2_DIMENSIONS)) if v2 else "none (1536 only)"
            raise ProviderError("client", f"'dimensions' for {req.model} must be one of: {allowed}",
                                param="dimensions", code="invalid_value")
        gate = asyncio.Semaphore(PARALLEL)

        async def one(text: str) -> tuple[list[float], int]:
            body: dict[str, Any] = {"inputText": text}
            if v2:
                body["normalize"] = True
                if req.dimensions is not None:
                    body["dimensions"] = req.dimensions
            async with gate:
                doc, header = await invoke(ctx, req.model, body)
            tokens = doc.get("inputTextTokenCount")
            return _floats(doc.get("embedding")), int(tokens) if isinstance(tokens, int) else (header or 0)

        results = await asyncio.gather(*(one(t) for t in texts))
        return EmbeddingsResult([v for v, _ in results], sum(n for _, n in results), req.model)

    async def _cohere(self, req: EmbeddingsRequest, texts: list[str], ctx: CallContext) -> EmbeddingsResult:
        if req.dimensions is not None:
            raise ProviderError("client", f"{req.model} does not take 'dimensions'", param="dimensions",
                                code="invalid_value")
        vectors: list[Any] = []
        tokens = 0
        for start in range(0, len(texts), COHERE_BATCH):
            body = {"texts": texts[start:start + COHERE_BATCH], "input_type": req.input_type or "search_document",
                    "truncate": "END"}
            doc, header = await invoke(ctx, req.model, body)
            got = doc.get("embeddings")
            if isinstance(got, dict):  # embedding_types given: {"float": [...]}
                got = got.get("float")
            if not isinstance(got, list) or len(got) != len(body["texts"]):
                raise ProviderError("upstream", "amazon-bedrock returned the wrong number of embeddings",
                                    code="invalid_upstream_response")
            vectors.extend(_floats(v) for v in got)
            tokens += header or 0
        return EmbeddingsResult(vectors, tokens, req.model)

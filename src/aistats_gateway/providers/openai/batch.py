"""OpenAI's Batch API as a :class:`~aistats_gateway.providers.batch_api.BatchProvider`.

A JSONL upload (``POST /files``, ``purpose=batch``) and ``POST /batches`` with metadata
``gateway_batch_id`` and an ``Idempotency-Key``; an unknown submission is found again by that
metadata. Chat, responses and messages rows go as chat completions; embeddings rows pass through
with the provider's model name. Results come from the batch's output and error files.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from aistats_gateway.llm.codecs import chat
from aistats_gateway.llm.ir import IRRequest, IRResponse, Usage
from aistats_gateway.providers import config, registry
from aistats_gateway.providers.batch_api import BATCH, Ambiguous, Result, Status, Target, call, jsonl, line_of

EMBEDDINGS = "/v1/embeddings"


class OpenAIBatches:
    provider = "openai"
    endpoints: tuple[str, ...] = ("/v1/chat/completions", "/v1/responses", "/v1/messages", EMBEDDINGS)

    def _base(self) -> tuple[str, dict[str, str]]:
        cfg = config.load(self.provider)
        return (cfg.base_url or "https://api.openai.com/v1").rstrip("/"), {"Authorization": f"Bearer {cfg.api_key}"}

    @staticmethod
    def url(endpoint: str) -> str:
        return EMBEDDINGS if endpoint == EMBEDDINGS else "/v1/chat/completions"

    def encode(self, endpoint: str, req: IRRequest | None, body: dict[str, Any], target: Target) -> dict[str, Any]:
        if req is None:
            return {**{k: v for k, v in body.items() if k != "provider"}, "model": target.model_slug}
        return chat.encode_request(req, supports=target.supports)

    def decode(self, endpoint: str, body: dict[str, Any]) -> tuple[IRResponse | dict[str, Any], Usage]:
        if endpoint == EMBEDDINGS:
            u = body.get("usage") or {}
            return body, Usage(int(u.get("prompt_tokens") or 0), 0)
        ir = chat.decode_response(body)
        return ir, ir.usage

    async def create(self, http: httpx.AsyncClient, batch_id: str, endpoint: str, window: str,
                     lines: list[tuple[int, dict[str, Any]]]) -> str:
        base, headers = self._base()
        data = b"".join(orjson.dumps({"custom_id": f"r{n}", "method": "POST", "url": self.url(endpoint), "body": b})
                        + b"\n" for n, b in lines)
        up = await call(http, "POST", f"{base}/files", headers, data={"purpose": "batch"},
                        files={"file": (f"{batch_id}.jsonl", data, "application/jsonl")})
        created = await call(http, "POST", f"{base}/batches", {**headers, "Idempotency-Key": f"gw:{batch_id}"},
                             json={"input_file_id": up["id"], "endpoint": self.url(endpoint),
                                   "completion_window": window, "metadata": {"gateway_batch_id": batch_id}})
        return str(created["id"])

    async def find(self, http: httpx.AsyncClient, batch_id: str, total: int, since: dt.datetime) -> list[str]:
        base, headers = self._base()
        after = None
        for _ in range(20):
            page = await call(http, "GET", f"{base}/batches", headers,
                              params={"limit": "100", **({"after": after} if after else {})})
            for nb in page.get("data", []):
                if (nb.get("metadata") or {}).get("gateway_batch_id") == batch_id:
                    return [str(nb["id"])]
            if not page.get("has_more") or not page.get("data"):
                return []
            after = page["data"][-1]["id"]
        raise Ambiguous("the provider's batch list is too long to search")

    async def status(self, http: httpx.AsyncClient, native_id: str) -> Status:
        base, headers = self._base()
        nb = await call(http, "GET", f"{base}/batches/{native_id}", headers)
        s = str(nb.get("status"))
        return Status(s if s in ("completed", "cancelled", "expired", "failed") else "running", nb)

    async def results(self, http: httpx.AsyncClient, st: Status) -> AsyncIterator[Result]:
        base, headers = self._base()
        for key in ("output_file_id", "error_file_id"):
            fid = st.native.get(key)
            if not fid:
                continue
            for raw in jsonl(await call(http, "GET", f"{base}/files/{fid}/content", headers)):
                ln = orjson.loads(raw)
                n = line_of(ln.get("custom_id"))
                if n is None:
                    continue
                resp = ln.get("response") or {}
                body = resp.get("body") if isinstance(resp.get("body"), dict) else None
                code = int(resp.get("status_code") or 0)
                err = (body or {}).get("error") if code != 200 else None
                yield Result(n, code, body if code == 200 else None, err or ln.get("error"))

    async def cancel(self, http: httpx.AsyncClient, native_id: str) -> None:
        base, headers = self._base()
        await call(http, "POST", f"{base}/batches/{native_id}/cancel", headers)


registry.register("openai", BATCH, OpenAIBatches())

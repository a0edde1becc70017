"""The Gemini API's batch mode (AI Studio) as a :class:`~aistats_gateway.providers.batch_api.BatchProvider`.

``models/{m}:batchGenerateContent`` with inline requests (``metadata.key`` = ``r<line>``); the
operation ``batches/{id}`` is found again by its ``displayName`` (``gw-<batch id>``); results are
inlined in the finished operation. Rows of any text endpoint are sent as ``generateContent``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import httpx

from aistats_gateway.llm.ir import IRRequest, IRResponse, Usage
from aistats_gateway.providers import config, registry
from aistats_gateway.providers.batch_api import BATCH, Ambiguous, Rejected, Result, Status, Target, call, line_of
from aistats_gateway.providers.google import chat as gemini_chat

_STATES = {"BATCH_STATE_SUCCEEDED": "completed", "BATCH_STATE_CANCELLED": "cancelled",
           "BATCH_STATE_EXPIRED": "expired", "BATCH_STATE_FAILED": "failed"}


class GeminiBatches:
    provider = "google-ai-studio"
    endpoints: tuple[str, ...] = ("/v1/chat/completions", "/v1/responses", "/v1/messages")

    def _base(self) -> tuple[str, dict[str, str]]:
        cfg = config.load(self.provider)
        base = (cfg.base_url or "https://generativelanguage.googleapis.com").rstrip("/")
        for suffix in ("/v1beta", "/v1"):
            base = base.removesuffix(suffix)
        return base + "/v1beta", {"x-goog-api-key": cfg.api_key or ""}

    def encode(self, endpoint: str, req: IRRequest | None, body: dict[str, Any], target: Target) -> dict[str, Any]:
        if req is None:
            raise Rejected(f"{endpoint} rows cannot run as Gemini batches")
        return {"model": req.model, "request": gemini_chat.encode_request(req)}

    def decode(self, endpoint: str, body: dict[str, Any]) -> tuple[IRResponse | dict[str, Any], Usage]:
        ir = gemini_chat.decode_response(body)
        return ir, ir.usage

    async def create(self, http: httpx.AsyncClient, batch_id: str, endpoint: str, window: str,
                     lines: list[tuple[int, dict[str, Any]]]) -> str:
        base, headers = self._base()
        model = lines[0][1]["model"]
        created = await call(http, "POST", f"{base}/models/{model}:batchGenerateContent", headers, json={
            "batch": {"display_name": f"gw-{batch_id}", "input_config": {"requests": {"requests": [
                {"request": b["request"], "metadata": {"key": f"r{n}"}} for n, b in lines]}}}})
        return str(created["name"])

    async def find(self, http: httpx.AsyncClient, batch_id: str, total: int, since: dt.datetime) -> list[str]:
        base, headers = self._base()
        token = None
        for _ in range(20):
            page = await call(http, "GET", f"{base}/batches", headers,
                              params={"pageSize": "100", **({"pageToken": token} if token else {})})
            for op in page.get("operations") or []:
                if (op.get("metadata") or {}).get("displayName") == f"gw-{batch_id}":
                    return [str(op["name"])]
            token = page.get("nextPageToken")
            if not token:
                return []
        raise Ambiguous("the provider's batch list is too long to search")

    async def status(self, http: httpx.AsyncClient, native_id: str) -> Status:
        base, headers = self._base()
        op = await call(http, "GET", f"{base}/{native_id}", headers)
        state = _STATES.get(str((op.get("metadata") or {}).get("state", "")), "running")
        return Status(state if op.get("done") or state != "running" else "running", op)

    async def results(self, http: httpx.AsyncClient, st: Status) -> AsyncIterator[Result]:
        inlined = (((st.native.get("response") or {}).get("inlinedResponses") or {}).get("inlinedResponses")) or []
        for item in inlined:
            n = line_of((item.get("metadata") or {}).get("key"))
            if n is None:
                continue
            if isinstance(item.get("response"), dict):
                yield Result(n, 200, item["response"], None)
            else:
                err = item.get("error") or {}
                yield Result(n, int(err.get("code") or 400), None, {
                    "message": err.get("message", "failed"), "type": "invalid_request_error", "param": None,
                    "code": err.get("status")})

    async def cancel(self, http: httpx.AsyncClient, native_id: str) -> None:
        base, headers = self._base()
        await call(http, "POST", f"{base}/{native_id}:cancel", headers)


registry.register("google-ai-studio", BATCH, GeminiBatches())

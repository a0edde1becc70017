"""Anthropic's Message Batches API as a :class:`~aistats_gateway.providers.batch_api.BatchProvider`.

``POST /messages/batches`` with ``requests[{custom_id, params}]``; results JSONL at ``/results``.
Message batches carry no metadata, so an unknown submission is found by its request count among
the batches created since the submission started (the gateway's own key). Rows of any text
endpoint are sent as Messages (``max_tokens`` defaults to :data:`MAX_TOKENS`, the API requires it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from aistats_gateway.llm.codecs import messages
from aistats_gateway.llm.ir import IRRequest, IRResponse, Usage
from aistats_gateway.providers import config, registry
from aistats_gateway.providers.batch_api import BATCH, Rejected, Result, Status, Target, call, jsonl, line_of

MAX_TOKENS = 4096
CLOCK_SKEW = dt.timedelta(seconds=5)


class AnthropicBatches:
    provider = "anthropic"
    endpoints: tuple[str, ...] = ("/v1/chat/completions", "/v1/responses", "/v1/messages")

    def _base(self) -> tuple[str, dict[str, str]]:
        cfg = config.load(self.provider)
        return ((cfg.base_url or "https://api.anthropic.com/v1").rstrip("/"),
                {"x-api-key": cfg.api_key or "", "anthropic-version": "2023-06-01"})

    def encode(self, endpoint: str, req: IRRequest | None, body: dict[str, Any], target: Target) -> dict[str, Any]:
        if req is None:
            raise Rejected(f"{endpoint} rows cannot run as Anthropic message batches")
        params = messages.encode_request(req, MAX_TOKENS)
        params.pop("stream", None)
        return params

    def decode(self, endpoint: str, body: dict[str, Any]) -> tuple[IRResponse | dict[str, Any], Usage]:
        ir = messages.decode_response(body)
        return ir, ir.usage

    async def create(self, http: httpx.AsyncClient, batch_id: str, endpoint: str, window: str,
                     lines: list[tuple[int, dict[str, Any]]]) -> str:
        base, headers = self._base()
        created = await call(http, "POST", f"{base}/messages/batches", headers,
                             json={"requests": [{"custom_id": f"r{n}", "params": b} for n, b in lines]})
        return str(created["id"])

    async def find(self, http: httpx.AsyncClient, batch_id: str, total: int, since: dt.datetime) -> list[str]:
        base, headers = self._base()
        page = await call(http, "GET", f"{base}/messages/batches", headers, params={"limit": "100"})
        floor = since - CLOCK_SKEW
        hits = []
        for nb in page.get("data", []):
            created = dt.datetime.fromisoformat(str(nb.get("created_at", "")))
            if created >= floor and sum((nb.get("request_counts") or {}).values()) == total:
                hits.append(str(nb["id"]))
        return hits

    async def status(self, http: httpx.AsyncClient, native_id: str) -> Status:
        base, headers = self._base()
        nb = await call(http, "GET", f"{base}/messages/batches/{native_id}", headers)
        if nb.get("processing_status") != "ended":
            return Status("running", nb)
        counts = nb.get("request_counts") or {}
        state = "cancelled" if nb.get("cancel_initiated_at") else "expired" if counts.get("expired") and not (
            counts.get("succeeded") or counts.get("errored")) else "completed"
        return Status(state, nb)

    async def results(self, http: httpx.AsyncClient, st: Status) -> AsyncIterator[Result]:
        base, headers = self._base()
        for raw in jsonl(await call(http, "GET", f"{base}/messages/batches/{st.native['id']}/results", headers)):
            ln = orjson.loads(raw)
            n = line_of(ln.get("custom_id"))
            res = ln.get("result") or {}
            if n is None or res.get("type") in ("canceled", "expired"):
                continue  # left as cancelled / expired by the caller
            if res.get("type") == "succeeded":
                yield Result(n, 200, res.get("message"), None)
            else:
                inner = ((res.get("error") or {}).get("error")) or {}
                yield Result(n, 400, None, {"message": inner.get("message", "errored"), "type": inner.get("type"),
                                            "param": None, "code": inner.get("type")})

    async def cancel(self, http: httpx.AsyncClient, native_id: str) -> None:
        base, headers = self._base()
        await call(http, "POST", f"{base}/messages/batches/{native_id}/cancel", headers)


registry.register("anthropic", BATCH, AnthropicBatches())

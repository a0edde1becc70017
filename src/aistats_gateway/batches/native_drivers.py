"""The providers' own batch APIs, behind one small interface (:class:`Driver`), and the row
conversion between the batch's endpoint and the provider's protocol (through the inference IR).

* OpenAI: JSONL upload (``/files``, ``purpose=batch``) + ``/batches`` (metadata
  ``gateway_batch_id``, ``Idempotency-Key``); results in the output and error files. Chat and
  responses rows go as chat completions; embeddings rows pass through.
* Anthropic: ``/messages/batches`` with ``requests[{custom_id, params}]``; results JSONL at
  ``/results``. Message batches carry no metadata, so an unknown submission is found by its
  request count among batches created since the submission started (the gateway's own key).
* Gemini (AI Studio): ``models/{m}:batchGenerateContent`` with inline requests (``metadata.key``),
  an operation found again by its ``displayName``; results inlined in the finished operation.

Provider ``custom_id``s are ``r<line>`` (valid for every provider); results map back by line.
Every call raises :class:`Ambiguous` (timeout, 408/429/5xx: the outcome is unknown) or
:class:`Rejected` (another 4xx).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import orjson

from aistats_gateway.inference import route
from aistats_gateway.llm.codecs import chat, messages, responses
from aistats_gateway.llm.codecs._common import Meta
from aistats_gateway.llm.ir import IRRequest, Usage
from aistats_gateway.providers import config

_CODEC: dict[str, Any] = {"/v1/chat/completions": chat, "/v1/responses": responses, "/v1/messages": messages}
ANTHROPIC_MAX_TOKENS = 4096


class Ambiguous(Exception):
    """The provider's answer does not tell whether the call took effect."""


class Rejected(Exception):
    """The provider refused the call definitively (4xx other than 408/429)."""


@dataclass
class Result:
    line: int
    status: int  # 200, or the provider's error status (0 when it gave none)
    body: dict[str, Any] | None  # the answer in the provider's protocol
    error: dict[str, Any] | None


@dataclass
class Status:
    state: str  # running | completed | cancelled | expired | failed
    native: dict[str, Any]


async def call(http: httpx.AsyncClient, method: str, url: str, headers: dict[str, str], **kw: Any) -> Any:
    try:
        r = await http.request(method, url, headers=headers, **kw)
    except httpx.HTTPError as e:
        raise Ambiguous(f"{method} {url}: {type(e).__name__}") from None
    if r.status_code >= 500 or r.status_code in (408, 429):
        raise Ambiguous(f"{method} {url}: HTTP {r.status_code}")
    if r.status_code >= 400:
        raise Rejected(f"HTTP {r.status_code}: {r.text[:500]}")
    return r.json() if r.headers.get("content-type", "").startswith("application/json") else r.content


def line_of(custom_id: Any) -> int | None:
    s = str(custom_id or "")
    return int(s[1:]) if s.startswith("r") and s[1:].isdigit() else None


class Driver(Protocol):
    provider: str

    def encode(self, endpoint: str, body: dict[str, Any], cand: route.Candidate) -> dict[str, Any]: ...

    def decode(self, endpoint: str, body: dict[str, Any], client_model: str) -> tuple[dict[str, Any], Usage]: ...

    async def create(self, http: httpx.AsyncClient, batch_id: str, endpoint: str, window: str,
                     lines: list[tuple[int, dict[str, Any]]]) -> str: ...

    async def find(self, http: httpx.AsyncClient, batch_id: str, total: int, since: dt.datetime) -> list[str]:
        """The provider batches that may be this submission (by metadata: at most one)."""
        ...

    async def status(self, http: httpx.AsyncClient, native_id: str) -> Status: ...

    def results(self, http: httpx.AsyncClient, st: Status) -> AsyncIterator[Result]: ...

    async def cancel(self, http: httpx.AsyncClient, native_id: str) -> None: ...


def _ir(endpoint: str, body: dict[str, Any], cand: route.Candidate) -> IRRequest:
    req: IRRequest = _CODEC[endpoint].decode_request({k: v for k, v in body.items() if k != "provider"})
    return route.request_for(req, cand)


def _meta(client_model: str, provider: str, native_id: str | None) -> Meta:
    return Meta(native_id or f"batchreq_{time.time_ns()}", client_model, provider, int(time.time()))


class OpenAIBatches:
    provider = "openai"

    def _base(self) -> tuple[str, dict[str, str]]:
        cfg = config.load(self.provider)
        return (cfg.base_url or "https://api.openai.com/v1").rstrip("/"), {"Authorization": f"Bearer {cfg.api_key}"}

    def url(self, endpoint: str) -> str:
        return "/v1/embeddings" if endpoint == "/v1/embeddings" else "/v1/chat/completions"

    def encode(self, endpoint: str, body: dict[str, Any], cand: route.Candidate) -> dict[str, Any]:
        if endpoint not in _CODEC:
            return {**{k: v for k, v in body.items() if k != "provider"}, "model": cand.model_slug}
        return chat.encode_request(_ir(endpoint, body, cand), supports=cand.supports)

    def decode(self, endpoint: str, body: dict[str, Any], client_model: str) -> tuple[dict[str, Any], Usage]:
        if endpoint not in _CODEC:
            u = body.get("usage") or {}
            return body, Usage(int(u.get("prompt_tokens") or 0), 0)
        ir = chat.decode_response(body)
        return _CODEC[endpoint].encode_response(ir, _meta(client_model, self.provider, ir.native_id)), ir.usage

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
            data = await call(http, "GET", f"{base}/files/{fid}/content", headers)
            for raw in (data if isinstance(data, bytes) else orjson.dumps(data)).splitlines():
                if not raw.strip():
                    continue
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


class AnthropicBatches:
    provider = "anthropic"

    def _base(self) -> tuple[str, dict[str, str]]:
        cfg = config.load(self.provider)
        return ((cfg.base_url or "https://api.anthropic.com/v1").rstrip("/"),
                {"x-api-key": cfg.api_key or "", "anthropic-version": "2023-06-01"})

    def encode(self, endpoint: str, body: dict[str, Any], cand: route.Candidate) -> dict[str, Any]:
        params = messages.encode_request(_ir(endpoint, body, cand), ANTHROPIC_MAX_TOKENS)
        params.pop("stream", None)
        return params

    def decode(self, endpoint: str, body: dict[str, Any], client_model: str) -> tuple[dict[str, Any], Usage]:
        ir = messages.decode_response(body)
        return _CODEC[endpoint].encode_response(ir, _meta(client_model, self.provider, ir.native_id)), ir.usage

    async def create(self, http: httpx.AsyncClient, batch_id: str, endpoint: str, window: str,
                     lines: list[tuple[int, dict[str, Any]]]) -> str:
        base, headers = self._base()
        created = await call(http, "POST", f"{base}/messages/batches", headers,
                             json={"requests": [{"custom_id": f"r{n}", "params": b} for n, b in lines]})
        return str(created["id"])

    async def find(self, http: httpx.AsyncClient, batch_id: str, total: int, since: dt.datetime) -> list[str]:
        base, headers = self._base()
        page = await call(http, "GET", f"{base}/messages/batches", headers, params={"limit": "100"})
        floor = since - dt.timedelta(seconds=5)  # clock skew allowance
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
        data = await call(http, "GET", f"{base}/messages/batches/{st.native['id']}/results", headers)
        for raw in (data if isinstance(data, bytes) else orjson.dumps(data)).splitlines():
            if not raw.strip():
                continue
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


class GeminiBatches:
    """Gemini API batch mode (AI Studio): inline requests, an operation ``batches/{id}`` found again by
    its ``displayName`` (``gw-<batch id>``)."""

    provider = "google-ai-studio"

    def _base(self) -> tuple[str, dict[str, str]]:
        cfg = config.load(self.provider)
        base = (cfg.base_url or "https://generativelanguage.googleapis.com").rstrip("/")
        for suffix in ("/v1beta", "/v1"):
            base = base.removesuffix(suffix)
        return base + "/v1beta", {"x-goog-api-key": cfg.api_key or ""}

    def encode(self, endpoint: str, body: dict[str, Any], cand: route.Candidate) -> dict[str, Any]:
        from aistats_gateway.providers.google import chat as gemini_chat

        req = _ir(endpoint, body, cand)
        return {"model": req.model, "request": gemini_chat.encode_request(req)}

    def decode(self, endpoint: str, body: dict[str, Any], client_model: str) -> tuple[dict[str, Any], Usage]:
        from aistats_gateway.providers.google import chat as gemini_chat

        ir = gemini_chat.decode_response(body)
        return _CODEC[endpoint].encode_response(ir, _meta(client_model, self.provider, ir.native_id)), ir.usage

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
        st = str((op.get("metadata") or {}).get("state", ""))
        state = {"BATCH_STATE_SUCCEEDED": "completed", "BATCH_STATE_CANCELLED": "cancelled",
                 "BATCH_STATE_EXPIRED": "expired", "BATCH_STATE_FAILED": "failed"}.get(st, "running")
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


DRIVERS: dict[str, Driver] = {"openai": OpenAIBatches(), "anthropic": AnthropicBatches(),
                              "google-ai-studio": GeminiBatches()}
NATIVE_ENDPOINTS: dict[str, tuple[str, ...]] = {
    "openai": ("/v1/chat/completions", "/v1/responses", "/v1/messages", "/v1/embeddings"),
    "anthropic": ("/v1/chat/completions", "/v1/responses", "/v1/messages"),
    "google-ai-studio": ("/v1/chat/completions", "/v1/responses", "/v1/messages"),
}

"""Chat through Amazon Bedrock's Converse API (``POST {base}/model/{id}/converse`` and
``/converse-stream``, a binary ``application/vnd.amazon.eventstream`` stream).

Settings (``AISTATS_PROVIDER_AMAZON_BEDROCK_`` + …): ``API_KEY`` is either a Bedrock API key (sent as
``Authorization: Bearer``) or ``ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]`` (requests are signed
with SigV4, service ``bedrock``); ``REGION`` (default ``us-east-1``); ``BASE_URL`` replaces
``https://bedrock-runtime.{REGION}.amazonaws.com``.

Mapping: system → ``system``; tool calls/results → ``toolUse`` / ``toolResult`` blocks; images (base64)
→ ``image.source.bytes``; ``inferenceConfig`` (``maxTokens``, ``temperature`` ≤ 1, ``topP``, ≤ 4
``stopSequences``); ``toolConfig`` (auto/any/tool); reasoning effort → ``additionalModelRequestFields.thinking``
and ``top_k`` for Anthropic models (dropped for the others). Usage: ``inputTokens`` excludes cache reads
(added back for the IR).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import struct
import zlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from aistats_gateway.llm.codecs._common import dumps, int_of, json_args
from aistats_gateway.llm.ir import (
    FinishReason,
    ImagePart,
    IRDelta,
    IRRequest,
    IRResponse,
    TextPart,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from aistats_gateway.providers.base import CallContext, ProviderError
from aistats_gateway.providers.config import env_prefix
from aistats_gateway.providers.inference import open_stream, post_json

PROVIDER_ID = "amazon-bedrock"
FINISH: dict[str, FinishReason] = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                                   "tool_use": "tool_calls", "content_filtered": "content_filter",
                                   "guardrail_intervened": "content_filter"}


def _region() -> str:
    return os.environ.get(env_prefix(PROVIDER_ID) + "REGION") or "us-east-1"


def _url(ctx: CallContext, model: str, method: str) -> str:
    base = (ctx.base_url or f"https://bedrock-runtime.{_region()}.amazonaws.com").rstrip("/")
    return f"{base}/model/{quote(model, safe='')}/{method}"


def sign(method: str, url: str, body: bytes, access_key: str, secret: str, region: str,
         session_token: str | None = None, now: dt.datetime | None = None) -> dict[str, str]:
    """SigV4 headers for one request (service ``bedrock``)."""
    now = now or dt.datetime.now(dt.UTC)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    parts = urlsplit(url)
    payload_hash = hashlib.sha256(body).hexdigest()
    headers = {"host": parts.netloc, "x-amz-date": amz_date, "x-amz-content-sha256": payload_hash}
    if session_token:
        headers["x-amz-security-token"] = session_token
    names = sorted(headers)
    canonical_uri = quote(parts.path, safe="/-_.~")  # the (already encoded) path encoded once more
    canonical = "\n".join([method, canonical_uri, parts.query, "".join(f"{n}:{headers[n]}\n" for n in names),
                           ";".join(names), payload_hash])
    scope = f"{day}/{region}/bedrock/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (day, region, "bedrock", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
                                f"SignedHeaders={';'.join(names)}, Signature={signature}")
    del headers["host"]
    return headers


def _auth(ctx: CallContext, url: str, body: bytes) -> dict[str, str]:
    key = ctx.api_key or ""
    if not key:
        raise ProviderError("auth", "amazon-bedrock: no credentials configured", code="provider_auth_failed")
    if key.count(":") in (1, 2) and not key.startswith("ABSK"):
        akid, secret, *token = key.split(":")
        return sign("POST", url, body, akid, secret, _region(), token[0] if token else None)
    return {"authorization": f"Bearer {key}"}


def encode_request(req: IRRequest) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []

    def push(role: str, blocks: list[dict[str, Any]]) -> None:
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})

    def blocks_of(parts: list[Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for p in parts:
            if isinstance(p, TextPart):
                if p.text:
                    out.append({"text": p.text})
            elif isinstance(p, ImagePart) and p.data is not None:
                fmt = (p.media_type or "image/png").split("/")[-1].replace("jpg", "jpeg")
                out.append({"image": {"format": fmt, "source": {"bytes": p.data}}})
            else:
                raise ProviderError("client", "amazon-bedrock takes images as base64 data, not URLs",
                                    param="messages", code="unsupported_input")
        return out

    for m in req.messages:
        if m.role in ("system", "developer"):
            continue
        if m.role == "tool":
            result: dict[str, Any] = {"toolUseId": m.tool_call_id, "content": blocks_of(m.content) or [{"text": ""}]}
            if m.is_error:
                result["status"] = "error"
            push("user", [{"toolResult": result}])
        elif m.role == "assistant":
            blocks = blocks_of(m.content) + [{"toolUse": {"toolUseId": c.id, "name": c.name,
                                                          "input": json_args(c.arguments)}} for c in m.tool_calls]
            push("assistant", blocks or [{"text": " "}])
        else:
            push("user", blocks_of(m.content) or [{"text": " "}])
    body: dict[str, Any] = {"messages": messages}
    if req.system_text:
        body["system"] = [{"text": req.system_text}]
    cfg: dict[str, Any] = {}
    if req.max_tokens is not None:
        cfg["maxTokens"] = req.max_tokens
    budget = req.thinking_budget() if "anthropic." in req.model else None
    if budget:
        budget = max(1024, budget)
        body["additionalModelRequestFields"] = {"thinking": {"type": "enabled", "budget_tokens": budget}}
        cfg["maxTokens"] = max(cfg.get("maxTokens", 4096), budget + 1024)
    else:
        if req.temperature is not None:
            cfg["temperature"] = min(1.0, req.temperature)
        if req.top_p is not None:
            cfg["topP"] = req.top_p
    if req.top_k is not None and "anthropic." in req.model and not budget:
        body.setdefault("additionalModelRequestFields", {})["top_k"] = req.top_k
    if req.stop:
        cfg["stopSequences"] = req.stop[:4]
    if cfg:
        body["inferenceConfig"] = cfg
    tc = req.tool_choice
    if req.tools and not (tc is not None and tc.mode == "none"):
        tool_cfg: dict[str, Any] = {"tools": [{"toolSpec": {"name": t.name, "description": t.description or t.name,
                                                            "inputSchema": {"json": t.parameters}}} for t in req.tools]}
        if tc is not None and tc.mode in ("required", "tool"):
            tool_cfg["toolChoice"] = {"any": {}} if tc.mode == "required" else {"tool": {"name": tc.name}}
        body["toolConfig"] = tool_cfg
    return body


def usage_from(u: dict[str, Any] | None) -> Usage:
    cached, written = int_of(u, "cacheReadInputTokens"), int_of(u, "cacheWriteInputTokens")
    return Usage(int_of(u, "inputTokens") + cached + written, int_of(u, "outputTokens"), cached, 0, written)


def decode_response(doc: dict[str, Any]) -> IRResponse:
    text: list[str] = []
    thinking: list[str] = []
    calls: list[ToolCall] = []
    for b in ((doc.get("output") or {}).get("message") or {}).get("content") or []:
        if "text" in b:
            text.append(str(b["text"]))
        elif "toolUse" in b:
            tu = b["toolUse"] or {}
            calls.append(ToolCall(str(tu.get("toolUseId") or ""), str(tu.get("name") or ""),
                                  dumps(tu.get("input") or {})))
        elif "reasoningContent" in b:
            thinking.append(str(((b["reasoningContent"] or {}).get("reasoningText") or {}).get("text") or ""))
    finish: FinishReason = "tool_calls" if calls else FINISH.get(str(doc.get("stopReason")), "stop")
    return IRResponse("".join(text), "".join(thinking) or None, calls, finish, usage_from(doc.get("usage")))


def _frames(buf: bytearray) -> list[tuple[dict[str, str], bytes]]:
    """Complete event-stream messages at the head of ``buf`` (removed from it), CRCs checked."""
    out: list[tuple[dict[str, str], bytes]] = []
    while len(buf) >= 12:
        total, hlen, pcrc = struct.unpack(">III", bytes(buf[:12]))
        if zlib.crc32(bytes(buf[:8])) != pcrc:
            raise ProviderError("upstream", "amazon-bedrock: corrupt event-stream prelude",
                                code="invalid_upstream_event")
        if len(buf) < total:
            break
        msg = bytes(buf[:total])
        del buf[:total]
        if zlib.crc32(msg[:-4]) != struct.unpack(">I", msg[-4:])[0]:
            raise ProviderError("upstream", "amazon-bedrock: corrupt event-stream message",
                                code="invalid_upstream_event")
        headers: dict[str, str] = {}
        i, end = 12, 12 + hlen
        while i < end:
            n = msg[i]
            name = msg[i + 1:i + 1 + n].decode()
            i += 1 + n
            kind = msg[i]
            i += 1
            if kind == 7:  # string
                ln = struct.unpack(">H", msg[i:i + 2])[0]
                headers[name] = msg[i + 2:i + 2 + ln].decode()
                i += 2 + ln
            else:
                raise ProviderError("upstream", "amazon-bedrock: unexpected event header type",
                                    code="invalid_upstream_event")
        out.append((headers, msg[end:-4]))
    return out


class BedrockChat:
    provider_id = PROVIDER_ID
    # top_k: Anthropic models only (additionalModelRequestFields); reasoning: Anthropic thinking budgets.
    supports = frozenset({"max_tokens", "temperature", "top_p", "top_k", "stop", "tools", "tool_choice",
                          "reasoning_effort"})

    async def complete(self, req: IRRequest, ctx: CallContext) -> IRResponse:
        url = _url(ctx, req.model, "converse")
        body = encode_request(req)
        raw = orjson.dumps(body)
        doc = await post_json(ctx, url, body, _auth(ctx, url, raw), self.provider_id)
        return decode_response(doc)

    async def stream(self, req: IRRequest, ctx: CallContext) -> AsyncIterator[IRDelta]:
        url = _url(ctx, req.model, "converse-stream")
        body = encode_request(req)
        headers = _auth(ctx, url, orjson.dumps(body))
        buf = bytearray()
        tools: dict[int, int] = {}
        async with open_stream(ctx, url, body, headers, self.provider_id) as resp:
            async for chunk in resp.aiter_bytes():
                buf.extend(chunk)
                for hdrs, payload in _frames(buf):
                    data = orjson.loads(payload) if payload else {}
                    if hdrs.get(":message-type") == "exception":
                        raise ProviderError("upstream", f"amazon-bedrock: {hdrs.get(':exception-type')}: "
                                            f"{data.get('message') or ''}", code="upstream_stream_error")
                    for d in self._event(hdrs.get(":event-type", ""), data, tools):
                        yield d

    @staticmethod
    def _event(kind: str, data: dict[str, Any], tools: dict[int, int]) -> list[IRDelta]:
        if kind == "contentBlockStart":
            tu = (data.get("start") or {}).get("toolUse")
            if tu:
                idx = tools[int(data.get("contentBlockIndex") or 0)] = len(tools)
                return [IRDelta(tool_call=ToolCallDelta(idx, tu.get("toolUseId"), tu.get("name"), ""))]
        elif kind == "contentBlockDelta":
            delta = data.get("delta") or {}
            if "text" in delta:
                return [IRDelta(text=str(delta["text"]))]
            if "toolUse" in delta:
                idx = tools.get(int(data.get("contentBlockIndex") or 0), 0)
                args = str((delta["toolUse"] or {}).get("input") or "")
                return [IRDelta(tool_call=ToolCallDelta(idx, arguments=args))]
            rc = delta.get("reasoningContent") or {}
            if rc.get("text"):
                return [IRDelta(reasoning=str(rc["text"]))]
        elif kind == "messageStop":
            reason = str(data.get("stopReason") or "end_turn")
            return [IRDelta(finish_reason="tool_calls" if tools else FINISH.get(reason, "stop"))]
        elif kind == "metadata":
            return [IRDelta(usage=usage_from(data.get("usage")))]
        elif kind == "messageStart":
            return [IRDelta(native_id=None)]
        return []


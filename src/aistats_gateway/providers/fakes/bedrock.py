"""Fake Amazon Bedrock Runtime Converse API (AWS docs: Converse, ConverseStream, SigV4, event stream encoding)
for tests and manual runs.

Routes: ``POST /model/{modelId}/converse``, ``POST /model/{modelId}/converse-stream`` and, for Nova Canvas
images, ``POST /model/{modelId}/invoke`` (:func:`nova_canvas`) (``modelId``
URL-encoded: ``anthropic.claude-…-v1:0``, inference profiles, ARNs).
Auth: **SigV4** — ``Authorization: AWS4-HMAC-SHA256 Credential=AKID/yyyymmdd/region/bedrock/aws4_request,
SignedHeaders=…, Signature=…`` with ``X-Amz-Date``; the fake recomputes the signature (canonical request with
the twice-encoded path, sorted query, the signed headers, sha256 of the body or ``X-Amz-Content-SHA256``) from
``secret_access_key`` and checks the scope (service ``bedrock``, ``region``) and a 5-minute clock skew —
or a Bedrock API key as ``Authorization: Bearer`` (``api_key``). Failures are 403 with AWS's messages.
Errors are ``{"message": …}`` with the ``x-amzn-ErrorType`` header (``ValidationException`` 400,
``AccessDeniedException``/``UnrecognizedClientException``/``InvalidSignatureException``/
``MissingAuthenticationTokenException`` 403, ``ThrottlingException`` 429, ``ModelTimeoutException`` 408,
``InternalServerException`` 500, ``ServiceUnavailableException`` 503) so botocore raises its typed errors.

Request: ``messages`` (``user``/``assistant`` alternating, starting with ``user``; content blocks ``text``,
``image``, ``document``, ``toolUse``, ``toolResult``, ``reasoningContent``, ``cachePoint``; toolResults must
answer the previous turn's toolUses), ``system``, ``inferenceConfig`` (``maxTokens`` ≥ 1, ``temperature`` and
``topP`` 0–1, ≤ 4 ``stopSequences``), ``toolConfig`` (``tools[].toolSpec{name, inputSchema.json}``,
``toolChoice`` auto/any/tool), ``additionalModelRequestFields.thinking`` (Anthropic models:
``{type: enabled, budget_tokens ≥ 1024}``); validation failures use AWS's "1 validation error detected: …" or
the Converse messages. Response: ``output.message.content`` (``reasoningContent``, ``text`` or ``toolUse``),
``stopReason`` (end_turn | max_tokens | stop_sequence | tool_use), ``usage`` (``inputTokens`` excludes
``cacheReadInputTokens``; ``totalTokens`` sums all), ``metrics.latencyMs``.
Stream: ``application/vnd.amazon.eventstream`` binary messages (prelude with lengths and CRC32, string
headers ``:event-type``/``:content-type``/``:message-type``, JSON payload with a ``p`` padding field, CRC32):
``messageStart``, ``contentBlockStart`` (tool use), ``contentBlockDelta`` (``text``, ``toolUse.input``
fragments, ``reasoningContent.text``/``signature``), ``contentBlockStop``, ``messageStop``, ``metadata``
(usage, metrics). A mid-stream failure is an exception message (``:message-type: exception``,
``:exception-type: internalServerException``). Bedrock's OpenAI-compatible endpoint is served too:
``POST /openai/v1/chat/completions`` and ``/openai/v1/embeddings`` (:mod:`.openai_inference`, Bearer = ``api_key``,
same state). ``POST /model/{modelId}/invoke`` for the embedding models (Titan, Cohere) is :mod:`.bedrock_invoke`.
Not faked: guardrails, prompt management, text-generation InvokeModel, citations.
"""
from __future__ import annotations

import calendar
import hashlib
import hmac
import json
import secrets
import struct
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .inference_common import (
    IMAGE_TOKENS,
    InferenceState,
    count_tokens,
    finish_text_seq,
    first_byte_wait,
    make_usage,
    pick_tool,
    pieces,
    read_json_body,
    reasoning_tokens_for,
    record,
    stream,
)
from .openai_inference import inference_routes

STOP = {"stop": "end_turn", "length": "max_tokens", "stop_sequence": "stop_sequence"}
BLOCKS = ("text", "image", "document", "video", "toolUse", "toolResult", "reasoningContent", "cachePoint",
          "guardContent")
TOP = frozenset({"messages", "system", "inferenceConfig", "toolConfig", "guardrailConfig",
                 "additionalModelRequestFields", "additionalModelResponseFieldPaths", "promptVariables",
                 "requestMetadata", "performanceConfig"})
EVENTSTREAM = "application/vnd.amazon.eventstream"


@dataclass
class BedrockState(InferenceState):
    access_key_id: str = "AKIDFAKEBEDROCK"
    secret_access_key: str = "fake-secret-access-key"
    region: str = "us-east-1"
    max_skew_seconds: int = 300


class AwsError(Exception):
    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse({"message": self.message}, status_code=self.status, headers={
            "x-amzn-errortype": f"{self.kind}:http://internal.amazon.com/coral/com.amazon.bedrock/",
            "x-amzn-requestid": secrets.token_hex(16), **self.headers})


def invalid(message: str) -> AwsError:
    return AwsError(400, "ValidationException", message)


def constraint(path: str, value: Any, rule: str) -> AwsError:
    return invalid(f"1 validation error detected: Value '{value}' at '{path}' failed to satisfy constraint: "
                   f"Member must {rule}")


def _injected(state: InferenceState, status: int) -> AwsError:
    msg = state.fail_message
    kinds = {429: ("ThrottlingException", "Too many requests, please wait before trying again."),
             408: ("ModelTimeoutException", "Model has timed out in processing the request."),
             500: ("InternalServerException", "The server encountered an error processing your request."),
             503: ("ServiceUnavailableException", "Bedrock is unable to process your request."),
             403: ("AccessDeniedException", "You don't have access to the model with the specified model ID."),
             400: ("ValidationException", "Injected validation failure.")}
    kind, default = kinds.get(status, ("InternalServerException", f"Injected failure ({status})."))
    return AwsError(status, kind, msg or default)


# ---------------------------------------------------------------- SigV4
def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def verify_sigv4(state: BedrockState, request: Request, body: bytes) -> None:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        if auth[7:].strip() != state.api_key:
            raise AwsError(403, "UnrecognizedClientException", "Invalid API Key format: Must start with pre-defined "
                           "prefix" if not auth[7:].strip() else "The security token included in the request is "
                           "invalid.")
        return
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        raise AwsError(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    fields = dict(p.strip().split("=", 1) for p in auth[17:].split(",") if "=" in p)
    try:
        akid, date, region, service, term = fields["Credential"].split("/")
        signed = fields["SignedHeaders"].split(";")
        signature = fields["Signature"]
    except (KeyError, ValueError):
        raise AwsError(403, "IncompleteSignatureException", "Authorization header requires 'Credential', "
                       "'Signature' and 'SignedHeaders' parameters.") from None
    if akid != state.access_key_id:
        raise AwsError(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
    amz_date = request.headers.get("x-amz-date", "")
    if "host" not in signed or "x-amz-date" not in signed or not amz_date:
        raise AwsError(403, "IncompleteSignatureException", "'Host' and 'X-Amz-Date' must be signed.")
    if service != "bedrock" or region != state.region or term != "aws4_request" or not amz_date.startswith(date):
        raise AwsError(403, "InvalidSignatureException", f"Credential should be scoped to a valid region and "
                       f"service: {region}/{service}; expected {state.region}/bedrock.")
    try:
        signed_at = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        raise AwsError(403, "IncompleteSignatureException", f"Date must be in ISO-8601 basic format: {amz_date}"
                       ) from None
    if abs(time.time() - signed_at) > state.max_skew_seconds:
        now = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        raise AwsError(403, "InvalidSignatureException", f"Signature expired: {amz_date} is now earlier than "
                       f"{now} - 5 min.")
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    path = quote(raw_path.decode("latin-1").split("?")[0], safe="/~")
    query = "&".join(sorted(p if "=" in p else p + "=" for p in request.url.query.split("&") if p))
    headers = "".join(f"{h}:{' '.join(','.join(request.headers.getlist(h)).split())}\n" for h in signed)
    payload = request.headers.get("x-amz-content-sha256") or hashlib.sha256(body).hexdigest()
    canonical = "\n".join([request.method, path, query, headers, ";".join(signed), payload])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, f"{date}/{region}/{service}/{term}",
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{state.secret_access_key}".encode(), date), region), service), term)
    if not hmac.compare_digest(hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), signature):
        raise AwsError(403, "InvalidSignatureException", "The request signature we calculated does not match the "
                       "signature you provided. Check your AWS Secret Access Key and signing method. Consult the "
                       "service documentation for details.")


# ---------------------------------------------------------------- event stream encoding
def event_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude (total length, headers length, CRC32), string headers, payload,
    message CRC32."""
    hdr = b"".join(struct.pack("B", len(k)) + k.encode() + b"\x07" + struct.pack(">H", len(v.encode())) + v.encode()
                   for k, v in headers.items())
    total = 12 + len(hdr) + len(payload) + 4
    prelude = struct.pack(">II", total, len(hdr))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + hdr + payload
    return body + struct.pack(">I", zlib.crc32(body))


def event(kind: str, data: dict[str, Any]) -> bytes:
    payload = json.dumps({**data, "p": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123"[:len(kind) + 8]})
    return event_message({":event-type": kind, ":content-type": "application/json", ":message-type": "event"},
                         payload.encode())


def _exception_frame(_i: int) -> bytes:
    return event_message({":exception-type": "internalServerException", ":content-type": "application/json",
                          ":message-type": "exception"},
                         b'{"message":"The server encountered an error processing your request."}')


# ---------------------------------------------------------------- request validation
def parse_messages(messages: Any) -> tuple[int, str]:
    if not isinstance(messages, list) or not messages:
        raise constraint("messages", messages, "have length greater than or equal to 1")
    tokens, echo, pending, prev = 0, "", set[str](), None
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ("user", "assistant"):
            raise constraint(f"messages.{i + 1}.member.role", role, "satisfy enum value set: [user, assistant]")
        if i == 0 and role != "user":
            raise invalid("A conversation must start with a user message. Try again with a conversation that starts "
                          "with a user message.")
        if role == prev:
            raise invalid("A conversation must alternate between user and assistant roles. Make sure the "
                          "conversation alternates between user and assistant roles and try again.")
        prev = role
        content = m.get("content")
        if not isinstance(content, list) or not content:
            raise invalid(f"The content field in the Message object at messages.{i} is empty. Add a ContentBlock "
                          "object to the content field and try again.")
        text, results = "", set()
        for j, block in enumerate(content):
            kinds = [k for k in block if k in BLOCKS] if isinstance(block, dict) else []
            if len(kinds) != 1:
                raise invalid(f"Malformed input request: messages.{i}.content.{j} must have exactly one of "
                              f"{', '.join(BLOCKS)}.")
            kind, value = kinds[0], block[kinds[0]]
            if kind == "text":
                text += str(value)
            elif kind in ("image", "document", "video"):
                tokens += IMAGE_TOKENS
            elif kind == "toolUse":
                if role != "assistant" or not isinstance(value, dict) or "toolUseId" not in value:
                    raise invalid(f"Malformed input request: messages.{i}.content.{j}.toolUse is invalid.")
                pending.add(value["toolUseId"])
                tokens += count_tokens(str(value.get("name"))) + count_tokens(json.dumps(value.get("input", {})))
            elif kind == "toolResult":
                tid = value.get("toolUseId") if isinstance(value, dict) else None
                if tid not in pending:
                    raise invalid(f"The toolResult blocks at messages.{i}.content contain toolUseId {tid} that does "
                                  "not match a toolUse block of the previous turn.")
                results.add(tid)
                for part in value.get("content") or []:
                    text += part["text"] if "text" in part else json.dumps(part.get("json", {}))
            elif kind == "reasoningContent":
                tokens += count_tokens(str((value.get("reasoningText") or {}).get("text", "")))
        if role == "user" and pending - results:
            raise invalid(f"Expected toolResult blocks at messages.{i}.content for the following Ids: "
                          f"{', '.join(sorted(pending - results))}")
        if role == "user":
            pending, echo = set(), text
        tokens += count_tokens(text)
    if pending:
        raise invalid("Expected toolResult blocks in a user message for the following Ids: "
                      + ", ".join(sorted(pending)))
    return tokens, echo


def build(state: BedrockState, model: str, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid("Malformed input request: expected a JSON object.")
    for k in body:
        if k not in TOP:
            raise invalid(f"Malformed input request: #: extraneous key [{k}] is not permitted, please reformat your "
                          "input and try again.")
    if state.models is not None and model not in state.models:
        raise invalid("The provided model identifier is invalid.")
    tokens, echo = parse_messages(body.get("messages"))
    tokens += sum(count_tokens(str(s.get("text", ""))) for s in body.get("system") or [] if isinstance(s, dict))
    cfg = body.get("inferenceConfig") or {}
    max_tokens = cfg.get("maxTokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise constraint("inferenceConfig.maxTokens", max_tokens, "have value greater than or equal to 1")
    for name in ("temperature", "topP"):
        v = cfg.get(name)
        if v is not None and (not isinstance(v, (int, float)) or not 0 <= v <= 1):
            raise constraint(f"inferenceConfig.{name}", v, "have value less than or equal to 1")
    stops = cfg.get("stopSequences") or []
    if len(stops) > 4:
        raise constraint("inferenceConfig.stopSequences", stops, "have length less than or equal to 4")
    tc = body.get("toolConfig") or {}
    tools = [(t["toolSpec"]["name"], (t["toolSpec"].get("inputSchema") or {}).get("json"))
             for t in tc.get("tools") or [] if isinstance(t, dict) and isinstance(t.get("toolSpec"), dict)]
    if tc and not tools:
        raise invalid("The toolConfig field must be defined when using toolUse and toolResult content blocks.")
    tokens += sum(count_tokens(json.dumps(t, sort_keys=True)) for t in tc.get("tools") or [])
    choice_cfg = tc.get("toolChoice") or {"auto": {}}
    choice = "required" if "any" in choice_cfg else (choice_cfg.get("tool") or {}).get("name", "auto")
    thinking = (body.get("additionalModelRequestFields") or {}).get("thinking")
    reasoning = 0
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < 1024:
            raise invalid("The model returned the following errors: thinking.enabled.budget_tokens: Input should be "
                          "greater than or equal to 1024")
        reasoning = reasoning_tokens_for(None, budget)
    content: list[dict[str, Any]] = []
    if reasoning:
        thought = " ".join(["Reasoning"] * reasoning)
        content.append({"reasoningContent": {"reasoningText": {"text": thought, "signature": hashlib.sha256(
            thought.encode()).hexdigest()}}})
    calls = pick_tool(state, tools, choice, echo)
    if calls:
        content += [{"toolUse": {"toolUseId": f"tooluse_{secrets.token_urlsafe(16)}", "name": n, "input": a}}
                    for n, a in calls]
        out, stop = sum(count_tokens(n) + count_tokens(json.dumps(a)) for n, a in calls), "tool_use"
    else:
        text, why, _ = finish_text_seq(state, echo, None if max_tokens is None else max(0, max_tokens - reasoning),
                                       stops)
        content.append({"text": text})
        out, stop = count_tokens(text), STOP[why]
    u = make_usage(state, tokens, out, reasoning)
    usage = {"inputTokens": u.input_tokens - u.cached_tokens, "outputTokens": u.output_tokens,
             "totalTokens": u.total_tokens, "cacheReadInputTokens": u.cached_tokens, "cacheWriteInputTokens": 0}
    return {"output": {"message": {"role": "assistant", "content": content}}, "stopReason": stop, "usage": usage,
            "metrics": {"latencyMs": 1}}


def stream_frames(resp: dict[str, Any]) -> list[bytes]:
    frames = [event("messageStart", {"role": "assistant"})]
    for i, block in enumerate(resp["output"]["message"]["content"]):
        if "toolUse" in block:
            tu = block["toolUse"]
            frames.append(event("contentBlockStart", {"contentBlockIndex": i, "start": {
                "toolUse": {"toolUseId": tu["toolUseId"], "name": tu["name"]}}}))
            js = json.dumps(tu["input"])
            deltas: list[dict[str, Any]] = [{"toolUse": {"input": js[s:s + 8]}} for s in range(0, len(js), 8)]
        elif "reasoningContent" in block:
            rt = block["reasoningContent"]["reasoningText"]
            deltas = [{"reasoningContent": {"text": p}} for p in pieces(rt["text"])]
            deltas.append({"reasoningContent": {"signature": rt["signature"]}})
        else:
            deltas = [{"text": p} for p in pieces(block["text"])]
        frames.extend(event("contentBlockDelta", {"contentBlockIndex": i, "delta": d}) for d in deltas)
        frames.append(event("contentBlockStop", {"contentBlockIndex": i}))
    frames.append(event("messageStop", {"stopReason": resp["stopReason"]}))
    frames.append(event("metadata", {"usage": resp["usage"], "metrics": resp["metrics"]}))
    return frames


NOVA_CANVAS = "amazon.nova-canvas-v1:0"


async def nova_canvas(model: str, body: Any) -> dict[str, Any]:
    """InvokeModel for Nova Canvas ``TEXT_IMAGE`` (Nova's user guide): ``textToImageParams.text`` 1-1024,
    ``negativeText``; ``imageGenerationConfig`` ``numberOfImages`` 1-5, ``quality`` standard|premium,
    ``width``/``height`` 320-4096 in multiples of 16 (at most 4 194 304 pixels), ``seed`` 0-858993459 →
    ``{images: [base64 PNG], error: null}``."""
    import base64

    from starlette.concurrency import run_in_threadpool

    from aistats_gateway.media import procedural

    if model != NOVA_CANVAS:
        raise AwsError(400, "ValidationException", f"The provided model identifier is invalid: {model}")
    if not isinstance(body, dict) or body.get("taskType") != "TEXT_IMAGE":
        raise invalid("Malformed input request: taskType must be TEXT_IMAGE here.")
    text = (body.get("textToImageParams") or {}).get("text")
    if not isinstance(text, str) or not 1 <= len(text) <= 1024:
        raise constraint("textToImageParams.text", text, "have length between 1 and 1024")
    cfg = body.get("imageGenerationConfig") or {}
    n, q = cfg.get("numberOfImages", 1), cfg.get("quality", "standard")
    w, h, seed = cfg.get("width", 1024), cfg.get("height", 1024), cfg.get("seed", 12)
    if not isinstance(n, int) or not 1 <= n <= 5:
        raise constraint("imageGenerationConfig.numberOfImages", n, "be between 1 and 5")
    if q not in ("standard", "premium"):
        raise constraint("imageGenerationConfig.quality", q, "be one of standard, premium")
    for name, v in (("width", w), ("height", h)):
        if not isinstance(v, int) or not 320 <= v <= 4096 or v % 16:
            raise constraint(f"imageGenerationConfig.{name}", v, "be a multiple of 16 between 320 and 4096")
    if w * h > 4_194_304:
        raise invalid("Malformed input request: the image is larger than 4194304 pixels.")
    if not isinstance(seed, int) or not 0 <= seed <= 858_993_459:
        raise constraint("imageGenerationConfig.seed", seed, "be between 0 and 858993459")
    out = []
    for i in range(n):
        png = await run_in_threadpool(procedural.generate, procedural.ImageSpec(text, w, h, seed + i, "png"))
        out.append(base64.b64encode(png).decode())
    return {"images": out, "error": None}


def create_app(api_key: str = "bedrock-api-key-test", **knobs: Any) -> Starlette:
    """Build the fake; ``knobs`` are :class:`BedrockState` fields (``access_key_id``, ``secret_access_key``,
    ``region``, the :class:`InferenceState` knobs). The state is ``app.state.fake``."""
    state = BedrockState(api_key=api_key, provider="amazon-bedrock", **knobs)

    def endpoint(handler: Callable[[Request, str, Any], Awaitable[Response]]
                 ) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            rec = record(state, request)
            try:
                raw = await request.body()
                verify_sigv4(state, request, raw)
                if (status := state.take_failure()) is not None:
                    raise _injected(state, status)
                try:
                    body = await read_json_body(request, rec)
                except ValueError:
                    raise invalid("Malformed input request: the body is not valid JSON.") from None
                response = await handler(request, request.path_params["model_id"], body)
            except AwsError as exc:
                response = exc.response()
            rec.status = response.status_code
            response.headers.setdefault("x-amzn-requestid", secrets.token_hex(16))
            return response
        return wrapped

    @endpoint
    async def converse(request: Request, model: str, body: Any) -> Response:
        resp = build(state, model, body)
        await first_byte_wait(state)
        return JSONResponse(resp)

    @endpoint
    async def converse_stream(request: Request, model: str, body: Any) -> Response:
        resp = build(state, model, body)
        await first_byte_wait(state)
        return stream(state, stream_frames(resp), _exception_frame, media_type=EVENTSTREAM)

    @endpoint
    async def invoke_model(request: Request, model: str, body: Any) -> Response:
        """InvokeModel: Nova Canvas images here, the embedding models in ``bedrock_invoke``."""
        if model.startswith("amazon.nova-canvas"):
            return JSONResponse(await nova_canvas(model, body))
        from .bedrock_invoke import invoke

        response = invoke(state, model, body)
        await first_byte_wait(state)
        return response

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        return AwsError(status, "UnknownOperationException" if status in (404, 405) else "ValidationException",
                        "Unknown operation" if status in (404, 405) else str(getattr(exc, "detail", ""))).response()

    app = Starlette(routes=[
        Route("/model/{model_id}/converse", converse, methods=["POST"]),
        Route("/model/{model_id}/converse-stream", converse_stream, methods=["POST"]),
        Route("/model/{model_id}/invoke", invoke_model, methods=["POST"]),  # Nova Canvas, embeddings
        # Bedrock's OpenAI-compatible endpoint (chat completions with a Bedrock API key as Bearer)
        *inference_routes(state, flavor="compat", prefix="/openai/v1"),
    ], exception_handlers={HTTPException: http_error})
    app.state.fake = state
    return app

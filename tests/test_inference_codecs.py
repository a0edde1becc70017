"""Protocol codecs: each client protocol → IR → each upstream protocol, and IR answers/streams →
each client protocol (tools, images, JSON schema, reasoning effort ⇄ budgets, stop reasons, usage)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aistats_gateway.http.errors import APIError
from aistats_gateway.llm.codecs import chat, messages, responses
from aistats_gateway.llm.codecs._common import Meta
from aistats_gateway.llm.ir import (
    ImagePart,
    IRDelta,
    IRResponse,
    StreamSummary,
    ToolCall,
    ToolCallDelta,
    Usage,
    budget_to_effort,
    effort_to_budget,
)
from aistats_gateway.providers.google import chat as gemini_chat

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
META = Meta(id="gen_abc", model="openai/gpt-4o-mini", provider="openai", created=1700000000, cost_nanos=1500)


def frames(raw: bytes) -> list[tuple[str | None, Any]]:
    out: list[tuple[str | None, Any]] = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        event = None
        data = ""
        for line in block.split("\n"):
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        out.append((event, data if data == "[DONE]" else json.loads(data)))
    return out


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "openai/gpt-4o-mini", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO",
                                                                         "detail": "low"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
    ], "tools": [{"type": "function", "function": {"name": "weather", "parameters": WEATHER}}], **extra}


def test_chat_decode_all_fields() -> None:
    req = chat.decode_request(chat_body(
        max_completion_tokens=50, temperature=0.5, top_p=0.9, stop="END", tool_choice="required",
        response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": WEATHER, "strict": True}},
        reasoning_effort="high", stream=True))
    assert [m.role for m in req.messages] == ["system", "user", "assistant", "tool"]
    img = req.messages[1].content[1]
    assert isinstance(img, ImagePart) and img.media_type == "image/png" and img.data == "iVBO" and img.detail == "low"
    assert req.messages[2].tool_calls == [ToolCall("call_1", "weather", '{"city":"Paris"}')]
    assert req.messages[3].tool_call_id == "call_1"
    assert req.max_tokens == 50 and req.stop == ["END"] and req.stream
    assert req.tool_choice is not None and req.tool_choice.mode == "required"
    assert req.response_format is not None and req.response_format.schema == WEATHER and req.response_format.strict
    assert req.reasoning_effort == "high"
    assert {"tools", "tool_choice", "response_format", "reasoning_effort", "stop", "max_tokens"} <= req.params


@pytest.mark.parametrize("body, param", [
    ({"temperature": 3}, "temperature"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"max_tokens": "ten"}, "max_tokens"),
    ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
    ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ({"n": 2}, "n"),
])
def test_chat_decode_rejects_bad_input_naming_the_parameter(body: dict[str, Any], param: str) -> None:
    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(APIError) as e:
        chat.decode_request({**base, **body})
    assert e.value.status == 400 and e.value.param == param


def test_chat_to_upstream_chat_round_trip_and_unsupported_fields_dropped() -> None:
    req = chat.decode_request(chat_body(stop=["x"], seed=3, stream=True))
    body = chat.encode_request(req)
    assert body["messages"][2]["tool_calls"][0]["function"]["name"] == "weather"
    assert body["messages"][1]["content"][1] == {"type": "image_url",
                                                 "image_url": {"url": "data:image/png;base64,iVBO", "detail": "low"}}
    assert body["stream_options"] == {"include_usage": True}
    dropped = chat.encode_request(req, supports=frozenset({"tools"}), developer_role=False)
    assert "stop" not in dropped and "seed" not in dropped and "tools" in dropped


def test_chat_to_anthropic_request() -> None:
    forced = messages.encode_request(chat.decode_request(chat_body(reasoning_effort="medium", tool_choice="required")))
    assert "thinking" not in forced and forced["tool_choice"] == {"type": "any"}  # Anthropic forbids both at once
    req = chat.decode_request(chat_body(reasoning_effort="medium", tool_choice="auto", max_tokens=1000,
                                        stop=["END"]))
    body = messages.encode_request(req)
    assert body["system"] == "Be brief."
    assert body["messages"][0]["content"][1] == {"type": "image", "source": {
        "type": "base64", "media_type": "image/png", "data": "iVBO"}}
    assert body["messages"][1]["content"][0] == {"type": "tool_use", "id": "call_1", "name": "weather",
                                                 "input": {"city": "Paris"}}
    assert body["messages"][2]["content"][0]["type"] == "tool_result"
    assert body["messages"][2]["content"][0]["tool_use_id"] == "call_1"
    assert body["thinking"] == {"type": "enabled", "budget_tokens": effort_to_budget("medium")}
    assert body["max_tokens"] > body["thinking"]["budget_tokens"]  # the budget must fit inside max_tokens
    assert body["tool_choice"] == {"type": "auto"}
    assert body["tools"][0]["input_schema"] == WEATHER
    assert body["stop_sequences"] == ["END"]


def test_anthropic_client_request_to_ir() -> None:
    req = messages.decode_request({
        "model": "anthropic/claude-sonnet-4.6", "max_tokens": 200, "system": [{"type": "text", "text": "S"}],
        "thinking": {"type": "enabled", "budget_tokens": 16384}, "stop_sequences": ["##"],
        "tools": [{"name": "weather", "input_schema": WEATHER}], "tool_choice": {"type": "tool", "name": "weather"},
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "tu_1", "name": "weather",
                                               "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu_1", "content": "cold"},
                                         {"type": "text", "text": "and?"}]},
        ]})
    assert req.system_text == "S"
    assert req.reasoning_budget == 16384 and req.reasoning_effort == "high"
    assert [m.role for m in req.messages] == ["system", "user", "assistant", "tool", "user"]
    assert req.messages[3].tool_call_id == "tu_1" and req.messages[3].text == "cold"
    assert req.tool_choice is not None and req.tool_choice.mode == "tool" and req.tool_choice.name == "weather"
    upstream = chat.encode_request(req)
    assert upstream["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert upstream["messages"][3] == {"role": "tool", "tool_call_id": "tu_1", "content": "cold"}
    assert upstream["reasoning_effort"] == "high"
    with pytest.raises(APIError) as e:
        messages.decode_request({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert e.value.param == "max_tokens"
    with pytest.raises(APIError) as e:
        messages.decode_request({"model": "m", "max_tokens": 5, "temperature": 1.5,
                                 "messages": [{"role": "user", "content": "x"}]})
    assert e.value.param == "temperature"


def test_effort_budget_mapping_both_ways() -> None:
    for effort in ("minimal", "low", "medium", "high", "xhigh"):
        assert budget_to_effort(effort_to_budget(effort)) == effort
    assert budget_to_effort(1500) == "minimal" and budget_to_effort(0) == "none"


def test_gemini_request_mapping() -> None:
    req = chat.decode_request(chat_body(
        reasoning_effort="low", tool_choice={"type": "function", "function": {"name": "weather"}}, max_tokens=99,
        response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": WEATHER}}))
    body = gemini_chat.encode_request(req)
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    roles = [c["role"] for c in body["contents"]]
    assert roles == ["user", "model", "user"]
    assert body["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": "iVBO"}}
    assert body["contents"][1]["parts"][0] == {"functionCall": {"name": "weather", "args": {"city": "Paris"}}}
    assert body["contents"][2]["parts"][0]["functionResponse"]["name"] == "weather"
    gen = body["generationConfig"]
    assert gen["thinkingConfig"] == {"thinkingBudget": effort_to_budget("low"), "includeThoughts": True}
    assert gen["maxOutputTokens"] == 99 and gen["responseJsonSchema"] == WEATHER
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["weather"]}}


def test_gemini_response_and_usage() -> None:
    resp = gemini_chat.decode_response({
        "candidates": [{"content": {"parts": [{"text": "think", "thought": True}, {"text": "Hi"}]},
                        "finishReason": "MAX_TOKENS"}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 7,
                          "cachedContentTokenCount": 4}})
    assert resp.content == "Hi" and resp.reasoning == "think" and resp.finish_reason == "length"
    assert resp.usage == Usage(10, 12, 4, 7)


@pytest.mark.parametrize("upstream, ir", [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
                                          ("tool_use", "tool_calls"), ("refusal", "content_filter")])
def test_anthropic_stop_reasons(upstream: str, ir: str) -> None:
    resp = messages.decode_response({"type": "message", "content": [], "stop_reason": upstream,
                                     "usage": {"input_tokens": 3, "output_tokens": 1}})
    assert resp.finish_reason == ir
    if upstream != "stop_sequence":
        assert messages.encode_response(resp, META)["stop_reason"] == upstream


def test_anthropic_usage_convention() -> None:
    resp = messages.decode_response({"type": "message", "content": [{"type": "text", "text": "x"}],
                                     "stop_reason": "end_turn", "usage": {"input_tokens": 10, "output_tokens": 2,
                                                                          "cache_read_input_tokens": 30}})
    assert resp.usage.input_tokens == 40 and resp.usage.cached_tokens == 30
    assert chat.encode_response(resp, META)["usage"]["prompt_tokens"] == 40
    back = messages.encode_response(resp, META)["usage"]
    assert back["input_tokens"] == 10 and back["cache_read_input_tokens"] == 30 and back["cost"] == 1.5e-6


def answer() -> IRResponse:
    return IRResponse("Sunny", "hmm", [ToolCall("call_9", "weather", '{"city":"Rome"}')], "tool_calls",
                      Usage(12, 8, 2, 3), "chatcmpl-1")


def test_encode_responses_in_each_protocol() -> None:
    c = chat.encode_response(answer(), META)
    assert c["id"] == "gen_abc" and c["provider"] == "openai" and c["cost_nanos"] == 1500
    assert c["usage"] == {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20,
                          "prompt_tokens_details": {"cached_tokens": 2},
                          "completion_tokens_details": {"reasoning_tokens": 3}, "cost": 1.5e-6}
    assert c["choices"][0]["finish_reason"] == "tool_calls"
    assert c["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == '{"city":"Rome"}'
    r = responses.encode_response(answer(), META)
    assert [i["type"] for i in r["output"]] == ["reasoning", "message", "function_call"]
    assert r["output"][2]["call_id"] == "call_9" and r["usage"]["output_tokens_details"]["reasoning_tokens"] == 3
    assert r["status"] == "completed" and r["usage"]["cost"] == 1.5e-6
    m = messages.encode_response(answer(), META)
    assert [b["type"] for b in m["content"]] == ["thinking", "text", "tool_use"]
    assert m["content"][2]["input"] == {"city": "Rome"} and m["stop_reason"] == "tool_use"


def deltas() -> list[IRDelta]:
    return [IRDelta(text="Hel"), IRDelta(text="lo"),
            IRDelta(tool_call=ToolCallDelta(0, "call_1", "weather", "")),
            IRDelta(tool_call=ToolCallDelta(0, arguments='{"city":')),
            IRDelta(tool_call=ToolCallDelta(0, arguments='"Rome"}')),
            IRDelta(finish_reason="tool_calls"), IRDelta(usage=Usage(5, 4))]


def test_chat_stream_encoder() -> None:
    enc = chat.StreamEncoder(META)
    raw = enc.start() + b"".join(enc.delta(d) for d in deltas()) + enc.finish(Usage(5, 4))
    fr = frames(raw)
    assert fr[-1] == (None, "[DONE]")
    usage = fr[-2][1]
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 9 and usage["usage"]["cost"] == 1.5e-6
    chunks = [f[1] for f in fr[:-2]]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "gen_abc" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "Hello"
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks if "tool_calls" in c["choices"][0]["delta"]]
    assert calls[0]["id"] == "call_1" and "".join(c["function"]["arguments"] for c in calls) == '{"city":"Rome"}'
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    err = frames(enc.error("boom"))[0][1]
    assert err["object"] == "error" and err["message"] == "boom"


def test_responses_stream_encoder() -> None:
    enc = responses.StreamEncoder(META)
    raw = enc.start() + b"".join(enc.delta(d) for d in deltas()) + enc.finish(Usage(5, 4))
    fr = frames(raw)
    kinds = [e for e, _ in fr]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds.count("response.output_text.delta") == 2
    assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed"
    assert [d["sequence_number"] for _, d in fr] == list(range(len(fr)))
    done = fr[-1][1]["response"]
    assert done["status"] == "completed" and done["usage"]["total_tokens"] == 9
    assert done["output"][0]["content"][0]["text"] == "Hello"
    assert done["output"][1]["arguments"] == '{"city":"Rome"}'
    assert frames(enc.error("boom"))[0][0] == "error"


def test_messages_stream_encoder_and_decoder_round_trip() -> None:
    enc = messages.StreamEncoder(META)
    raw = enc.start() + b"".join(enc.delta(d) for d in deltas()) + enc.finish(Usage(5, 4))
    fr = frames(raw)
    kinds = [e for e, _ in fr]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("content_block_start") == 2 and kinds.count("content_block_stop") == 2
    assert fr[-2][1]["delta"]["stop_reason"] == "tool_use" and fr[-2][1]["usage"]["output_tokens"] == 4
    dec = messages.StreamDecoder()
    summary = StreamSummary()
    for _, data in fr:
        for d in dec.event(data):
            summary.add(d)
    got = summary.response()
    assert got.content == "Hello" and got.tool_calls == [ToolCall("call_1", "weather", '{"city":"Rome"}')]
    assert got.finish_reason == "tool_calls" and got.usage.input_tokens == 5 and got.usage.output_tokens == 4
    assert frames(enc.error("boom"))[0] == ("error", {"type": "error", "error": {"type": "api_error",
                                                                                   "message": "boom"}})


def test_chat_chunk_decoding_and_summary() -> None:
    summary = StreamSummary()
    for chunk in [
        {"id": "c1", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "A"}}]},
        {"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}]},
        {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"id": "c1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2,
                                              "prompt_tokens_details": {"cached_tokens": 1}}},
    ]:
        for d in chat.decode_chunk(chunk):
            summary.add(d)
    r = summary.response()
    assert r.content == "A" and r.tool_calls == [ToolCall("t", "f", "{}")] and r.native_id == "c1"
    assert r.usage == Usage(3, 2, 1, 0)


def test_responses_client_request() -> None:
    req = responses.decode_request({
        "model": "openai/gpt-4o-mini", "instructions": "Sys", "max_output_tokens": 30,
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"},
                                               {"type": "input_image", "image_url": "https://x/y.png"}]},
                  {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                  {"type": "function_call_output", "call_id": "c1", "output": "ok"}],
        "tools": [{"type": "function", "name": "f", "parameters": WEATHER}],
        "text": {"format": {"type": "json_schema", "name": "x", "schema": WEATHER}},
        "reasoning": {"effort": "low"}})
    assert [m.role for m in req.messages] == ["system", "user", "assistant", "tool"]
    assert req.max_tokens == 30 and req.reasoning_effort == "low" and req.tools[0].parameters == WEATHER
    assert req.response_format is not None and req.response_format.type == "json_schema"
    body = messages.encode_request(req)
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": WEATHER}}
    up = responses.encode_request(req)
    assert up["instructions"] == "Sys" and up["input"][1]["type"] == "function_call"
    with pytest.raises(APIError) as e:
        responses.decode_request({"model": "m"})
    assert e.value.param == "input"

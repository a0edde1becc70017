"""The fake Cohere v2 API (chat plain/streamed, tools, thinking, embed), raw httpx, error shape and faults."""
from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from aistats_gateway.providers.fakes import FAKES
from aistats_gateway.providers.fakes.cohere import TEMPLATE_TOKENS
from aistats_gateway.providers.fakes.inference_common import count_tokens
from aistats_gateway.providers.fakes.testing import RunningFake

AUTH = {"Authorization": "Bearer co-test"}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


@pytest.fixture(scope="module")
def fake() -> Iterator[RunningFake]:
    with RunningFake("cohere", prefix="/v2") as f:
        yield f


@pytest.fixture
def state(fake: RunningFake) -> Any:
    st = fake.state
    st.reset()
    return st


def chat(fake: RunningFake, body: dict[str, Any], headers: dict[str, str] = AUTH) -> httpx.Response:
    return httpx.post(fake.base_url + "/chat", json=body, headers=headers)


def msgs(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def frames(raw: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for f in raw.split("\n\n"):
        if f:
            head, data = f.split("\n")
            out.append((head.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def test_chat_plain_usage_billed_vs_raw(fake: RunningFake, state: Any) -> None:
    r = chat(fake, {"model": "command-a-03-2025", "messages": [{"role": "system", "content": "Short."},
                                                               *msgs("Hello, Cohere")]})
    body = r.json()
    assert r.status_code == 200 and body["finish_reason"] == "COMPLETE"
    assert body["message"]["content"] == [{"type": "text", "text": "Hello, Cohere"}]
    billed = body["usage"]["billed_units"]
    assert billed == {"input_tokens": count_tokens("Short.") + 3, "output_tokens": 3}
    assert body["usage"]["tokens"]["input_tokens"] == billed["input_tokens"] + TEMPLATE_TOKENS
    assert state.request_count == 1 and state.last_headers["authorization"] == "Bearer co-test"


def test_chat_stream_events(fake: RunningFake, state: Any) -> None:
    with httpx.stream("POST", fake.base_url + "/chat", headers=AUTH,
                      json={"model": "command-a", "messages": msgs("one two"), "stream": True}) as r:
        evs = frames(r.read().decode())
    assert [t for t, _ in evs] == ["message-start", "content-start", "content-delta", "content-delta", "content-end",
                                   "message-end"]
    assert all(d["type"] == t for t, d in evs)
    assert "".join(d["delta"]["message"]["content"]["text"] for t, d in evs if t == "content-delta") == "one two"
    end = evs[-1][1]["delta"]
    assert end["finish_reason"] == "COMPLETE" and end["usage"]["billed_units"]["output_tokens"] == 2


def test_tools_round_trip_and_streamed_call(fake: RunningFake, state: Any) -> None:
    r = chat(fake, {"model": "command-a", "messages": msgs("get_weather Lima"), "tools": TOOLS}).json()
    assert r["finish_reason"] == "TOOL_CALL" and r["message"]["tool_plan"]
    call = r["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather" and json.loads(call["function"]["arguments"])["city"]
    with httpx.stream("POST", fake.base_url + "/chat", headers=AUTH, json={
            "model": "command-a", "messages": msgs("x"), "tools": TOOLS, "tool_choice": "REQUIRED",
            "stream": True}) as s:
        evs = frames(s.read().decode())
    kinds = [t for t, _ in evs]
    assert "tool-plan-delta" in kinds and kinds.index("tool-call-start") < kinds.index("tool-call-end")
    args = "".join(d["delta"]["message"]["tool_calls"]["function"]["arguments"] for t, d in evs
                   if t == "tool-call-delta")
    assert json.loads(args) == {"city": "x"}
    follow = chat(fake, {"model": "command-a", "tools": TOOLS, "messages": [
        *msgs("get_weather Lima"), {"role": "assistant", "tool_plan": "p", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": [{"type": "document", "document": {"data": "hot"}}]}]})
    assert follow.json()["message"]["content"][0]["text"] == '{"data": "hot"}'
    orphan = chat(fake, {"model": "command-a", "messages": [*msgs("x"), {"role": "tool", "tool_call_id": "nope",
                                                                        "content": "r"}]})
    assert orphan.status_code == 400 and orphan.json()["message"].startswith("invalid request: ")


def test_thinking_max_tokens_and_json(fake: RunningFake, state: Any) -> None:
    t = chat(fake, {"model": "command-a-reasoning", "messages": msgs("think"),
                    "thinking": {"type": "enabled", "token_budget": 2000}}).json()
    assert t["message"]["content"][0]["type"] == "thinking"
    assert t["usage"]["billed_units"]["output_tokens"] == 64 + 1
    state.reply_text = "a b c d"
    cut = chat(fake, {"model": "command-a", "messages": msgs("x"), "max_tokens": 2}).json()
    assert cut["finish_reason"] == "MAX_TOKENS" and cut["message"]["content"][0]["text"] == "a b"
    state.reply_text = None
    js = chat(fake, {"model": "command-a", "messages": msgs("x"), "response_format": {
        "type": "json_object", "json_schema": {"type": "object", "properties": {"k": {"type": "integer"}},
                                               "required": ["k"]}}}).json()
    assert json.loads(js["message"]["content"][0]["text"]) == {"k": 1}


def test_errors_and_faults(fake: RunningFake, state: Any) -> None:
    bad_key = chat(fake, {"model": "m", "messages": msgs("x")}, headers={"Authorization": "Bearer no"})
    assert bad_key.status_code == 401 and set(bad_key.json()) == {"id", "message"}
    assert bad_key.json()["message"] == "invalid api token"
    unknown = chat(fake, {"model": "m", "messages": msgs("x"), "bogus": 1}).json()
    assert unknown["message"] == "invalid request: unknown field: parameter bogus is not a valid field"
    assert chat(fake, {"model": "m", "messages": msgs("x"), "temperature": 2}).status_code == 400
    state.fail_next, state.fail_status, state.retry_after_seconds = 1, 429, 4
    rl = chat(fake, {"model": "m", "messages": msgs("x")})
    assert rl.status_code == 429 and rl.headers["retry-after"] == "4"
    state.fail_stream_after = 2
    with httpx.stream("POST", fake.base_url + "/chat", headers=AUTH,
                      json={"model": "m", "messages": msgs("a b c"), "stream": True}) as s:
        evs = frames(s.read().decode())
    assert evs[-1][1]["delta"]["finish_reason"] == "ERROR" and len(evs) == 3


def test_embed_types_and_dimensions(fake: RunningFake, state: Any) -> None:
    r = httpx.post(fake.base_url + "/embed", headers=AUTH, json={
        "model": "embed-v4.0", "input_type": "search_document", "texts": ["hello world", "bye"],
        "embedding_types": ["float", "int8", "ubinary", "base64"], "output_dimension": 256}).json()
    assert r["response_type"] == "embeddings_by_type" and r["texts"] == ["hello world", "bye"]
    emb = r["embeddings"]
    assert [len(v) for v in emb["float"]] == [256, 256] and len(emb["ubinary"][0]) == 32
    assert all(-127 <= x <= 127 for x in emb["int8"][0])
    unpacked = struct.unpack("<256f", base64.b64decode(emb["base64"][0]))
    assert all(abs(a - b) < 1e-6 for a, b in zip(unpacked, emb["float"][0]))
    assert r["meta"]["billed_units"]["input_tokens"] == 3
    v3 = httpx.post(fake.base_url + "/embed", headers=AUTH, json={
        "model": "embed-english-v3.0", "input_type": "search_query", "texts": ["q"]}).json()
    assert len(v3["embeddings"]["float"][0]) == 1024
    missing = httpx.post(fake.base_url + "/embed", headers=AUTH, json={"model": "embed-v4.0", "texts": ["q"]})
    assert missing.status_code == 400 and "input_type" in missing.json()["message"]
    assert "cohere" in FAKES

"""The fake Anthropic Messages API, driven with the official anthropic SDK (plain, streaming, tools,
thinking, count_tokens) and raw httpx for the SSE framing, headers and error shapes."""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from aistats_gateway.providers.fakes import FAKES
from aistats_gateway.providers.fakes.inference_common import count_tokens
from aistats_gateway.providers.fakes.testing import RunningFake

TOOLS: list[Any] = [{"name": "get_weather", "description": "Weather of a city", "input_schema": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}


@pytest.fixture(scope="module")
def fake() -> Iterator[RunningFake]:
    with RunningFake("anthropic", prefix="") as f:
        yield f


@pytest.fixture
def state(fake: RunningFake) -> Any:
    st = fake.state
    st.reset()
    return st


@pytest.fixture
def client(fake: RunningFake, state: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="sk-ant-test", base_url=fake.url, max_retries=0)


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def test_plain_message_usage_and_headers(client: anthropic.Anthropic, state: Any) -> None:
    m = client.messages.create(model="claude-sonnet-4-5", max_tokens=100, system="Be terse.",
                               messages=user("Hello, Claude"))
    assert m.type == "message" and m.role == "assistant" and m.id.startswith("msg_")
    assert [b.type for b in m.content] == ["text"] and m.content[0].text == "Hello, Claude"  # type: ignore[union-attr]
    assert m.stop_reason == "end_turn" and m.stop_sequence is None
    assert m.usage.input_tokens == count_tokens("Be terse.") + count_tokens("Hello, Claude")
    assert m.usage.output_tokens == 3
    hdrs = state.last_headers
    # anthropic 2.x sends the key as a Bearer token (older SDKs: x-api-key) and a dated version header
    assert "sk-ant-test" in (hdrs.get("x-api-key"), hdrs.get("authorization", "").removeprefix("Bearer "))
    assert hdrs["anthropic-version"]
    assert state.usages[-1].output_tokens == 3


def test_cached_tokens_are_excluded_from_input_tokens(client: anthropic.Anthropic, state: Any) -> None:
    state.cached_tokens = 2
    m = client.messages.create(model="claude", max_tokens=50, messages=user("one two three four"))
    assert (m.usage.input_tokens, m.usage.cache_read_input_tokens) == (2, 2)


def test_max_tokens_and_stop_sequences(client: anthropic.Anthropic, state: Any) -> None:
    state.reply_text = "alpha beta gamma delta"
    m = client.messages.create(model="claude", max_tokens=2, messages=user("x"))
    assert m.content[0].text == "alpha beta" and m.stop_reason == "max_tokens"  # type: ignore[union-attr]
    m = client.messages.create(model="claude", max_tokens=50, messages=user("x"), stop_sequences=["gamma"])
    assert m.stop_reason == "stop_sequence" and m.stop_sequence == "gamma"
    assert m.content[0].text == "alpha beta "  # type: ignore[union-attr]


def test_stream_text_sdk_and_wire(fake: RunningFake, client: anthropic.Anthropic, state: Any) -> None:
    with client.messages.stream(model="claude", max_tokens=100, messages=user("Stream this, please")) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "Stream this, please" and final.usage.output_tokens == 4
    body = {"model": "claude", "max_tokens": 100, "messages": user("Hi there"), "stream": True}
    with httpx.stream("POST", fake.url + "/v1/messages", json=body, headers=HEADERS) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        frames = [f for f in r.read().decode().split("\n\n") if f]
    names = [f.split("\n")[0].removeprefix("event: ") for f in frames]
    assert names == ["message_start", "content_block_start", "ping", "content_block_delta", "content_block_delta",
                     "content_block_stop", "message_delta", "message_stop"]
    for f in frames:
        head, data = f.split("\n")
        assert json.loads(data.removeprefix("data: "))["type"] == head.removeprefix("event: ")
    delta = json.loads(frames[-2].split("\n")[1][6:])
    assert delta["delta"]["stop_reason"] == "end_turn" and delta["usage"]["output_tokens"] == 2


def test_thinking_plain_and_stream(client: anthropic.Anthropic, state: Any) -> None:
    m = client.messages.create(model="claude", max_tokens=2000, thinking={"type": "enabled", "budget_tokens": 1024},
                               messages=user("Think hard"))
    assert [b.type for b in m.content] == ["thinking", "text"]
    thinking = m.content[0].thinking  # type: ignore[union-attr]
    assert count_tokens(thinking) == 64 and m.usage.output_tokens == 64 + 2
    events: list[str] = []
    with client.messages.stream(model="claude", max_tokens=2000, messages=user("Think hard"),
                                thinking={"type": "enabled", "budget_tokens": 1024}) as s:
        for e in s:
            if e.type == "content_block_delta":
                events.append(e.delta.type)
        final = s.get_final_message()
    assert "thinking_delta" in events and "signature_delta" in events and "text_delta" in events
    assert final.content[0].thinking == thinking and final.content[0].signature  # type: ignore[union-attr]


@pytest.mark.parametrize("extra,needle", [
    ({"thinking": {"type": "enabled", "budget_tokens": 500}}, "greater than or equal to 1024"),
    ({"thinking": {"type": "enabled", "budget_tokens": 4000}}, "`max_tokens` must be greater than"),
    ({"thinking": {"type": "enabled", "budget_tokens": 1024}, "temperature": 0.5}, "may only be set to 1"),
    ({"temperature": 1.5}, "temperature: Input should be less than or equal to 1"),
    ({"bogus": True}, "bogus: Extra inputs are not permitted"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "messages.0.role: Input should be 'user' or 'assistant'"),
])
def test_validation_errors(fake: RunningFake, state: Any, extra: dict[str, Any], needle: str) -> None:
    body = {"model": "claude", "max_tokens": 2000, "messages": user("x"), **extra}
    r = httpx.post(fake.url + "/v1/messages", json=body, headers=HEADERS)
    assert r.status_code == 400 and r.headers["request-id"].startswith("req_")
    err = r.json()
    assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
    assert needle in err["error"]["message"] and err["request_id"] == r.headers["request-id"]


def test_missing_max_tokens_with_sdk_error_types(client: anthropic.Anthropic, fake: RunningFake, state: Any) -> None:
    r = httpx.post(fake.url + "/v1/messages", json={"model": "claude", "messages": user("x")}, headers=HEADERS)
    assert r.json()["error"]["message"] == "max_tokens: Field required"
    with pytest.raises(anthropic.AuthenticationError) as exc:
        anthropic.Anthropic(api_key="wrong", base_url=fake.url, max_retries=0).messages.create(
            model="claude", max_tokens=5, messages=user("x"))
    assert exc.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    r = httpx.post(fake.url + "/v1/messages", json={}, headers={"x-api-key": "sk-ant-test"})
    assert r.status_code == 400 and r.json()["error"]["message"] == "anthropic-version: header is required"
    state.fail_next, state.fail_status = 1, 529
    with pytest.raises(anthropic.APIStatusError) as over:
        client.messages.create(model="claude", max_tokens=5, messages=user("x"))
    assert over.value.status_code == 529 and over.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    state.fail_next, state.fail_status, state.retry_after_seconds = 1, 429, 3
    with pytest.raises(anthropic.RateLimitError) as rl:
        client.messages.create(model="claude", max_tokens=5, messages=user("x"))
    assert rl.value.response.headers["retry-after"] == "3"
    assert [r.status for r in state.requests] == [400, 401, 400, 529, 429]


def test_tool_use_round_trip_and_streamed_input_json(client: anthropic.Anthropic, state: Any) -> None:
    m = client.messages.create(model="claude", max_tokens=100, tools=TOOLS, messages=user("get_weather in Rome"))
    assert m.stop_reason == "tool_use"
    block = m.content[0]
    assert block.type == "tool_use" and block.name == "get_weather" and set(block.input) == {"city"}
    deltas: list[str] = []
    with client.messages.stream(model="claude", max_tokens=100, tools=TOOLS, tool_choice={"type": "any"},
                                messages=user("weather please")) as s:
        for e in s:
            if e.type == "content_block_delta" and e.delta.type == "input_json_delta":
                deltas.append(e.delta.partial_json)
        final = s.get_final_message()
    assert len(deltas) > 2 and json.loads("".join(deltas)) == final.content[0].input  # type: ignore[union-attr]
    turns: list[Any] = [*user("get_weather in Rome"), {"role": "assistant", "content": [block.model_dump()]},
                        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id,
                                                      "content": "Sunny and 25"}]}]
    follow = client.messages.create(model="claude", max_tokens=100, tools=TOOLS, messages=turns)
    assert follow.content[0].text == "Sunny and 25"  # type: ignore[union-attr]
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.messages.create(model="claude", max_tokens=100, tools=TOOLS, messages=[*turns[:2], *user("no")])
    assert "`tool_use` ids were found without `tool_result` blocks" in str(exc.value)


def test_mid_stream_error_event(client: anthropic.Anthropic, state: Any) -> None:
    state.fail_stream_after = 4
    with pytest.raises(anthropic.APIStatusError) as exc, \
            client.messages.stream(model="claude", max_tokens=100, messages=user("a b c d e f")) as s:
        for _ in s:
            pass
    assert "Overloaded" in str(exc.value)


def test_count_tokens(client: anthropic.Anthropic, state: Any) -> None:
    n = client.messages.count_tokens(model="claude", system="Sys.", messages=user("Hello, Claude"))
    assert n.input_tokens == count_tokens("Sys.") + count_tokens("Hello, Claude")
    assert state.usages == [] and "anthropic" in FAKES

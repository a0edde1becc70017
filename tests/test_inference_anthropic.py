"""Anthropic as the upstream (translated from chat completions and spoken natively), mid-stream
failures, keep-alives, and fallback on an upstream timeout; through real HTTP on both backends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from aistats_gateway.inference import service
from aistats_gateway.providers.fakes.testing import RunningFake
from tests.support.books import assert_books_balance
from tests.support.gateway import BACKENDS, Gateway, running_gateway
from tests.support.inference import CHAT_KNOBS, generation, reset_knobs, token_nanos, upstream_fixtures

HAIKU = "anthropic/claude-haiku-4.5"  # 1.00 / 0.10 cached / 5.00 USD per million tokens
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
NANOS = 1_000_000_000


def haiku_nanos(input_tokens: int, output_tokens: int, cached: int = 0) -> int:
    return token_nanos((input_tokens - cached, "1.00"), (cached, "0.10"), (output_tokens, "5.00"))


fakes, oai = upstream_fixtures({"anthropic": "sk-ant-test", "groq": "gsk_test", "together": "together-test"})


@pytest.fixture(autouse=True)
def reset(fakes: dict[str, RunningFake]) -> None:
    reset_knobs(fakes, CHAT_KNOBS)


def test_chat_to_anthropic_plain_and_exact_charge(oai: openai.OpenAI, api: httpx.Client, gateway: Gateway,
                                                  key: str, fakes: dict[str, RunningFake]) -> None:
    st = fakes["anthropic"].state
    st.cached_tokens = 2
    c = oai.chat.completions.create(model=HAIKU, messages=[{"role": "system", "content": "Be brief."},
                                                           {"role": "user", "content": "hello anthropic"}])
    st.cached_tokens = 0
    assert c.choices[0].message.content == "hello anthropic" and c.choices[0].finish_reason == "stop"
    sent = st.last_body
    assert sent["system"] == "Be brief." and sent["model"] == "claude-haiku-4-5-20251001"
    assert sent["max_tokens"] == 4096 and st.last_headers["x-api-key"] == "sk-ant-test"
    u = st.usages[-1]
    assert c.usage is not None and c.usage.prompt_tokens == u.input_tokens  # the fake records totals incl. cache
    assert c.usage.prompt_tokens_details is not None and c.usage.prompt_tokens_details.cached_tokens == 2
    want = haiku_nanos(u.input_tokens, u.output_tokens, u.cached_tokens)
    assert st.last is not None
    assert (c.model_extra or {})["cost_nanos"] == want
    assert generation(api, c.id)["provider"] == "anthropic"
    assert_books_balance(gateway, key)


def test_chat_to_anthropic_stream_tools_and_reasoning(oai: openai.OpenAI, fakes: dict[str, RunningFake]) -> None:
    st = fakes["anthropic"].state
    chunks = list(oai.chat.completions.create(model=HAIKU, messages=[{"role": "user", "content": "a b c"}],
                                              stream=True, stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "a b c"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    st.tool_calls = [("weather", {"city": "Oslo"})]
    tools: Any = [{"type": "function", "function": {"name": "weather", "parameters": WEATHER}}]
    c = oai.chat.completions.create(model=HAIKU, messages=[{"role": "user", "content": "Oslo?"}], tools=tools)
    call = (c.choices[0].message.tool_calls or [])[0]
    assert c.choices[0].finish_reason == "tool_calls" and json.loads(call.function.arguments) == {"city": "Oslo"}  # type: ignore[union-attr]
    assert st.last_body["tools"][0]["input_schema"] == WEATHER
    chunks = list(oai.chat.completions.create(model=HAIKU, messages=[{"role": "user", "content": "Oslo?"}],
                                              tools=tools, stream=True))
    args = "".join(tc.function.arguments or "" for ch in chunks if ch.choices
                   for tc in (ch.choices[0].delta.tool_calls or []) if tc.function)
    assert json.loads(args) == {"city": "Oslo"}
    st.tool_calls = None
    # the tool result travels back as a tool_result block
    c = oai.chat.completions.create(model=HAIKU, tools=tools, messages=[
        {"role": "user", "content": "Oslo?"},
        {"role": "assistant", "tool_calls": [{"id": call.id, "type": "function",
                                              "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "cold"}])
    assert c.choices[0].message.content == "cold"
    assert st.last_body["messages"][2]["content"][0]["type"] == "tool_result"
    # reasoning effort becomes an extended-thinking budget; the thinking comes back as reasoning_content
    r = oai.chat.completions.create(model=HAIKU, messages=[{"role": "user", "content": "think"}],
                                    reasoning_effort="low")
    assert st.last_body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert st.last_body["max_tokens"] > 2048 and r.choices[0].message.content == "think"
    assert (r.choices[0].message.model_extra or {}).get("reasoning_content")


def test_anthropic_sdk_native(gateway: Gateway, key: str, fakes: dict[str, RunningFake]) -> None:
    st = fakes["anthropic"].state
    client = anthropic.Anthropic(api_key=key, base_url=gateway.base_url, max_retries=0)
    msg = client.messages.create(model=HAIKU, max_tokens=2000, thinking={"type": "enabled", "budget_tokens": 1024},
                                 messages=[{"role": "user", "content": "deep thought"}])
    kinds = [b.type for b in msg.content]
    assert kinds == ["thinking", "text"] and msg.content[1].text == "deep thought"  # type: ignore[union-attr]
    assert st.last_body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert msg.usage.output_tokens == st.usages[-1].output_tokens
    with client.messages.stream(model=HAIKU, max_tokens=50, messages=[{"role": "user", "content": "x y z"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "x y z" and final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    with client.messages.stream(model=HAIKU, max_tokens=50, stop_sequences=["gamma"],
                                messages=[{"role": "user", "content": "alpha beta gamma delta"}]) as s:
        stopped = s.get_final_message()
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "gamma"  # Anthropic's, passed on
    assert "".join(b.text for b in stopped.content if b.type == "text").strip() == "alpha beta"
    assert_books_balance(gateway, key)


def test_mid_stream_failure_ends_with_an_error_event_and_costs_nothing(
        api: httpx.Client, gateway: Gateway, key: str, fakes: dict[str, RunningFake]) -> None:
    st = fakes["anthropic"].state
    st.reply_text = "one two three four five six seven eight"
    for path, body in (
        ("/v1/chat/completions", {"model": HAIKU, "messages": [{"role": "user", "content": "x"}], "stream": True}),
        ("/v1/messages", {"model": HAIKU, "max_tokens": 50, "messages": [{"role": "user", "content": "x"}],
                          "stream": True}),
        ("/v1/responses", {"model": HAIKU, "input": "x", "stream": True}),
    ):
        st.fail_stream_after = 4
        r = api.post(path, json=body)
        assert r.status_code == 200
        blocks = [b for b in r.text.split("\n\n") if b.strip()]
        last = blocks[-1]
        first = json.loads(blocks[0].split("data: ", 1)[1])
        gen_id = first.get("id") or (first.get("message") or first.get("response") or {}).get("id")
        if path == "/v1/chat/completions":
            assert json.loads(last[6:])["object"] == "error"
        else:
            assert last.startswith("event: error")
        rec = generation(api, gen_id)
        assert rec["status"] == "failed" and rec["cost_nanos"] == 0
    assert_books_balance(gateway, key)


def test_keep_alive_comment_on_long_silence(api: httpx.Client, fakes: dict[str, RunningFake],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "KEEPALIVE_SECONDS", 0.1)
    st = fakes["anthropic"].state
    st.reply_text = "slow answer"
    st.event_delay = 0.4
    r = api.post("/v1/chat/completions", json={"model": HAIKU, "messages": [{"role": "user", "content": "x"}],
                                               "stream": True})
    assert r.status_code == 200 and ": keep-alive" in r.text
    text = "".join((json.loads(b[6:])["choices"] or [{}])[0].get("delta", {}).get("content") or ""
                   for b in r.text.split("\n\n") if b.startswith("data: {"))
    assert text == "slow answer"


@pytest.fixture(scope="module", params=BACKENDS)
def impatient(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
              fakes: dict[str, RunningFake]) -> Iterator[Gateway]:
    with running_gateway(request.param, Path(tmp_path_factory.mktemp("gwt")), upstream_timeout_seconds=0.5) as gw:
        yield gw


def test_fallback_on_timeout(impatient: Gateway, fakes: dict[str, RunningFake]) -> None:
    api = impatient.client(impatient.create_key("t", credits_usd=5))
    groq, together = fakes["groq"].state, fakes["together"].state
    groq.first_byte_delay = 2.0
    for stream in (False, True):
        before = together.request_count
        r = api.post("/v1/chat/completions", json={
            "model": "meta/llama-3.3-70b", "messages": [{"role": "user", "content": "late"}], "stream": stream,
            "provider": {"order": ["groq", "together"]}})
        assert r.status_code == 200, r.text
        assert together.request_count == before + 1
        gen_id = json.loads(r.text.split("\n\n")[0][6:])["id"] if stream else r.json()["id"]
        rec = generation(api, gen_id)
        assert [(a["provider"], a["ok"]) for a in rec["attempts"]] == [("groq", False), ("together", True)]
        assert rec["attempts"][0]["code"] == "provider_timeout"
    r = api.post("/v1/chat/completions", json={"model": "meta/llama-3.3-70b", "provider": {"only": ["groq"]},
                                               "messages": [{"role": "user", "content": "late"}]})
    assert r.status_code == 504

"""Gemini as the upstream: Google AI Studio (API key) and Vertex AI (service-account bearer), plain and
streaming, tools, thinking budgets, embeddings, and the Anthropic SDK translated to Gemini."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from aistats_gateway.providers.fakes.testing import RunningFake
from aistats_gateway.providers.google import vertex_video as vertex
from tests.support.books import assert_books_balance
from tests.support.gateway import BACKENDS, Gateway, running_gateway
from tests.support.google_accounts import PROJECT, SA_EMAIL, SA_KEY_ID
from tests.support.google_accounts import rsa_pair as _rsa_pair
from tests.support.google_accounts import service_account as _service_account
from tests.support.inference import generation
from tests.test_provider_google import STUDIO_KEY

PRO = "google/gemini-3-pro"  # 2.00 in / 12.00 out USD per million tokens (no cached price: input price)
STUDIO = {"only": ["google-ai-studio"]}
VERTEX = {"only": ["google-vertex"]}
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def pro_nanos(input_tokens: int, output_tokens: int) -> int:
    return input_tokens * 2000 + output_tokens * 12000  # 2000 / 12000 nano-USD per token


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFake]:
    private, public = _rsa_pair()
    with RunningFake("google-vertex", prefix="", api_key=STUDIO_KEY, project=PROJECT) as running:
        running.state.register_service_account(SA_EMAIL, SA_KEY_ID, public, PROJECT)
        sa_file = tmp_path_factory.mktemp("sa") / "sa.json"
        sa_file.write_text(json.dumps(_service_account(private, running.url + "/token")))
        with pytest.MonkeyPatch.context() as mp:
            for pid, key in (("GOOGLE_AI_STUDIO", STUDIO_KEY), ("GOOGLE_VERTEX", str(sa_file))):
                mp.setenv(f"AISTATS_PROVIDER_{pid}_API_KEY", key)
                mp.setenv(f"AISTATS_PROVIDER_{pid}_BASE_URL", running.url)
            mp.delenv("AISTATS_PROVIDER_GOOGLE_VERTEX_PROJECT", raising=False)
            mp.delenv("AISTATS_PROVIDER_GOOGLE_VERTEX_LOCATION", raising=False)
            yield running
    vertex.forget_credentials()


@pytest.fixture(scope="module", params=BACKENDS)
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            fake: RunningFake) -> Iterator[Gateway]:
    with running_gateway(request.param, tmp_path_factory.mktemp("gw")) as gw:
        yield gw


def st(fake: RunningFake) -> Any:
    return fake.app.state.inference


@pytest.fixture(autouse=True)
def reset(fake: RunningFake) -> None:
    s = st(fake)
    s.tool_calls = None
    s.reply_text = None
    s.fail_next = 0


@pytest.fixture(scope="module")
def oai(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=gateway.base_url + "/v1", max_retries=0)


@pytest.mark.parametrize("only", [STUDIO, VERTEX], ids=["studio", "vertex"])
def test_chat_plain_and_stream(oai: openai.OpenAI, api: httpx.Client, gateway: Gateway, key: str,
                               fake: RunningFake, only: dict[str, Any]) -> None:
    c = oai.chat.completions.create(model=PRO, messages=[{"role": "system", "content": "Echo."},
                                                         {"role": "user", "content": "hello gemini"}],
                                    max_tokens=500, extra_body={"provider": only})
    assert c.choices[0].message.content == "hello gemini" and c.choices[0].finish_reason == "stop"
    body = st(fake).last_body
    assert body["systemInstruction"] == {"parts": [{"text": "Echo."}]}
    assert body["generationConfig"]["maxOutputTokens"] == 500
    u = st(fake).usages[-1]
    assert c.usage is not None and c.usage.prompt_tokens == u.input_tokens
    assert c.usage.completion_tokens == u.output_tokens  # includes the thoughts
    assert (c.model_extra or {})["cost_nanos"] == pro_nanos(u.input_tokens, u.output_tokens)
    rec = generation(api, c.id)
    assert rec["provider"] == only["only"][0]
    headers = st(fake).last_headers
    if only is STUDIO:
        assert headers["x-goog-api-key"] == STUDIO_KEY
    else:
        assert headers["authorization"].startswith("Bearer ")
    chunks = list(oai.chat.completions.create(model=PRO, messages=[{"role": "user", "content": "a b c d"}],
                                              stream=True, stream_options={"include_usage": True},
                                              extra_body={"provider": only}))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "a b c d"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == st(fake).usages[-1].output_tokens
    assert_books_balance(gateway, key)


def test_tools_and_thinking(oai: openai.OpenAI, fake: RunningFake) -> None:
    s = st(fake)
    s.tool_calls = [("weather", {"city": "Rome"})]
    tools: Any = [{"type": "function", "function": {"name": "weather", "parameters": WEATHER}}]
    c = oai.chat.completions.create(model=PRO, messages=[{"role": "user", "content": "Rome?"}], tools=tools,
                                    extra_body={"provider": STUDIO})
    call = (c.choices[0].message.tool_calls or [])[0]
    assert c.choices[0].finish_reason == "tool_calls" and call.function.name == "weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Rome"}  # type: ignore[union-attr]
    assert s.last_body["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"] == WEATHER
    chunks = list(oai.chat.completions.create(model=PRO, messages=[{"role": "user", "content": "Rome?"}],
                                              tools=tools, stream=True, extra_body={"provider": STUDIO}))
    args = "".join(tc.function.arguments or "" for ch in chunks if ch.choices
                   for tc in (ch.choices[0].delta.tool_calls or []) if tc.function)
    assert json.loads(args) == {"city": "Rome"}
    s.tool_calls = None
    c = oai.chat.completions.create(model=PRO, tools=tools, extra_body={"provider": STUDIO}, messages=[
        {"role": "user", "content": "Rome?"},
        {"role": "assistant", "tool_calls": [{"id": call.id, "type": "function",
                                              "function": {"name": "weather", "arguments": '{"city":"Rome"}'}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "warm"}])
    assert "warm" in (c.choices[0].message.content or "")  # the fake echoes the function response
    assert s.last_body["contents"][2]["parts"][0]["functionResponse"]["name"] == "weather"
    r = oai.chat.completions.create(model=PRO, messages=[{"role": "user", "content": "think"}], reasoning_effort="high",
                                    extra_body={"provider": STUDIO})
    assert s.last_body["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 16384, "includeThoughts": True}
    assert r.usage is not None and r.usage.completion_tokens_details is not None
    assert r.usage.completion_tokens_details.reasoning_tokens == s.usages[-1].reasoning_tokens > 0
    j = oai.chat.completions.create(model=PRO, messages=[{"role": "user", "content": "city"}], response_format={
        "type": "json_schema", "json_schema": {"name": "w", "schema": WEATHER}}, extra_body={"provider": STUDIO})
    assert "city" in json.loads(j.choices[0].message.content or "{}")
    assert s.last_body["generationConfig"]["responseMimeType"] == "application/json"


def test_embeddings_and_anthropic_sdk_to_gemini(oai: openai.OpenAI, gateway: Gateway, key: str,
                                                fake: RunningFake) -> None:
    e = oai.embeddings.create(model="google/gemini-embedding-001", input=["one", "two three"])
    assert len(e.data) == 2 and len(e.data[0].embedding) == 3072
    assert e.usage.prompt_tokens > 0
    client = anthropic.Anthropic(api_key=key, base_url=gateway.base_url, max_retries=0)
    msg = client.messages.create(model=PRO, max_tokens=300, messages=[{"role": "user", "content": "via claude"}],
                                 extra_body={"provider": STUDIO})
    assert [b.type for b in msg.content][-1] == "text" and msg.content[-1].text == "via claude"  # type: ignore[union-attr]
    with client.messages.stream(model=PRO, max_tokens=300, messages=[{"role": "user", "content": "x y"}],
                                extra_body={"provider": STUDIO}) as s:
        assert "".join(s.text_stream) == "x y"
    assert_books_balance(gateway, key)

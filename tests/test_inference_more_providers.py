"""Alibaba (DashScope's OpenAI-compatible mode), MiniMax (chatcompletion_v2) and Bedrock embeddings
(InvokeModel, SigV4) as upstreams through the gateway with the openai SDK, against their fakes: plain and
streamed chat, embeddings with ``dimensions``, provider limits, errors in MiniMax's ``base_resp``
convention, exact charges, and ``/v1/models`` marking the offers active."""

from __future__ import annotations

import math
from typing import Any

import httpx
import openai
import pytest

from aistats_gateway.providers.fakes.testing import RunningFake
from tests.support.books import assert_books_balance
from tests.support.gateway import Gateway
from tests.support.inference import Upstream, assert_streams_with_usage, reset_knobs, upstream_fixtures

QWEN = "qwen/qwen3-max"  # 1.20 / 6.00 USD per million tokens
QWEN_EMBED = "qwen/text-embedding-v4"  # 0.07
MINIMAX = "minimax/minimax-m2"  # 0.30 / 1.20
TITAN = "amazon/titan-embed-text-v2"  # 0.02


fakes, oai = upstream_fixtures({  # BASE_URL: the API host, as for their other capabilities
    "alibaba": Upstream("sk-dashscope-test", prefix=""), "minimax": Upstream("mm-test", prefix=""),
    "amazon-bedrock": Upstream("AKIDFAKEBEDROCK:fake-secret-access-key", prefix="")})


@pytest.fixture(autouse=True)
def reset(fakes: dict[str, RunningFake]) -> None:
    reset_knobs(fakes, {"fail_next": 0})


def _state(fakes: dict[str, RunningFake], pid: str) -> Any:
    app = fakes[pid].app
    return app.state.inference if pid != "amazon-bedrock" else app.state.fake


def test_qwen_chat_plain_and_streamed_through_dashscope_compatible_mode(oai: openai.OpenAI, gateway: Gateway,
                                                                        key: str, fakes: dict[str, RunningFake]
                                                                        ) -> None:
    st = _state(fakes, "alibaba")
    c = oai.chat.completions.create(model=QWEN, messages=[{"role": "developer", "content": "Be brief."},
                                                          {"role": "user", "content": "hello qwen"}],
                                    max_tokens=30, temperature=1.5, stop=["zzz"])
    assert c.choices[0].message.content == "hello qwen" and (c.model_extra or {})["provider"] == "alibaba"
    rec = st.last
    assert rec.path == "/compatible-mode/v1/chat/completions" and rec.headers["authorization"] == \
        "Bearer sk-dashscope-test"
    assert rec.body["model"] == "qwen3-max" and rec.body["max_tokens"] == 30
    assert rec.body["messages"][0]["role"] == "system"  # no developer role in DashScope's compatible mode
    u = st.usages[-1]
    assert (c.model_extra or {})["cost_nanos"] == u.input_tokens * 1200 + u.output_tokens * 6000
    assert_streams_with_usage(oai, QWEN, "a b c", st)
    assert st.last.body["stream_options"] == {"include_usage": True}
    assert_books_balance(gateway, key)


def test_qwen_embeddings_dimensions_and_batches_of_ten(oai: openai.OpenAI, fakes: dict[str, RunningFake]) -> None:
    st = _state(fakes, "alibaba")
    e = oai.embeddings.create(model=QWEN_EMBED, input=["one", "two"], dimensions=512, encoding_format="float")
    assert [len(d.embedding) for d in e.data] == [512, 512]
    assert st.last.body == {"model": "text-embedding-v4", "input": ["one", "two"], "dimensions": 512}
    before = st.request_count
    many = oai.embeddings.create(model=QWEN_EMBED, input=[f"text {i}" for i in range(23)], encoding_format="float")
    assert [d.index for d in many.data] == list(range(23)) and st.request_count - before == 3  # 10 + 10 + 3
    assert (many.model_extra or {})["cost_nanos"] == many.usage.prompt_tokens * 70
    with pytest.raises(openai.BadRequestError) as err:
        oai.embeddings.create(model=QWEN_EMBED, input="x", dimensions=100)
    assert "dimension" in str(err.value)


def test_minimax_chat_plain_streamed_and_base_resp_errors(oai: openai.OpenAI, gateway: Gateway, key: str,
                                                          fakes: dict[str, RunningFake]) -> None:
    st = _state(fakes, "minimax")
    c = oai.chat.completions.create(model=MINIMAX, messages=[{"role": "system", "content": "Echo."},
                                                             {"role": "user", "content": "hello minimax"}],
                                    max_tokens=40, temperature=0.5, stop=["never"])
    assert c.choices[0].message.content == "hello minimax" and (c.model_extra or {})["provider"] == "minimax"
    rec = st.last
    assert rec.path == "/v1/text/chatcompletion_v2" and rec.body["max_completion_tokens"] == 40
    assert "stop" not in rec.body and "max_tokens" not in rec.body  # no stop sequences on chatcompletion_v2
    u = st.usages[-1]
    assert (c.model_extra or {})["cost_nanos"] == u.input_tokens * 300 + u.output_tokens * 1200
    chunks = list(oai.chat.completions.create(model=MINIMAX, stream=True, stream_options={"include_usage": True},
                                              messages=[{"role": "user", "content": "x y"}]))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "x y"
    assert any(ch.usage is not None and ch.usage.completion_tokens == st.usages[-1].output_tokens for ch in chunks)
    # HTTP 200 with base_resp 2013 (temperature outside (0, 1]) is the client's error, named, never a 500.
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model=MINIMAX, messages=[{"role": "user", "content": "t"}], temperature=0)
    assert "2013" in str(err.value)
    st.fail_next = 1
    st.fail_status = 429  # base_resp 1002 on HTTP 200: a rate limit (retryable), not an answer
    with pytest.raises(openai.APIStatusError) as limited:
        oai.chat.completions.create(model=MINIMAX, messages=[{"role": "user", "content": "t"}])
    assert limited.value.status_code in (429, 502, 503) and "1002" in str(limited.value)
    assert_books_balance(gateway, key)


def test_minimax_takes_no_forced_tool_choice(oai: openai.OpenAI, api: httpx.Client, gateway: Gateway, key: str,
                                             fakes: dict[str, RunningFake]) -> None:
    """MiniMax's tool_choice is none or auto: a forced choice is sent as auto (the tools kept), or, with
    provider.require_parameters, MiniMax is not used."""
    st = _state(fakes, "minimax")
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        c = oai.chat.completions.create(model=MINIMAX, messages=[{"role": "user", "content": "weather?"}],
                                        tools=tools, tool_choice=choice)  # type: ignore[arg-type]
        assert (c.model_extra or {})["provider"] == "minimax"
        assert st.last.body["tool_choice"] == "auto" and st.last.body["tools"][0]["function"]["name"] == "get_weather"
    auto = oai.chat.completions.create(model=MINIMAX, messages=[{"role": "user", "content": "x"}], tools=tools,
                                       tool_choice="none")  # type: ignore[arg-type]
    assert auto.choices and st.last.body["tool_choice"] == "none"
    before = st.request_count
    r = api.post("/v1/chat/completions", json={"model": MINIMAX, "messages": [{"role": "user", "content": "w"}],
                                               "tools": tools, "tool_choice": "required",
                                               "provider": {"require_parameters": True}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "provider.require_parameters", r.text
    assert "tool_choice:forced" in r.json()["error"]["message"] and st.request_count == before
    assert_books_balance(gateway, key)


def test_titan_embeddings_over_invoke_model_signed(oai: openai.OpenAI, gateway: Gateway, key: str,
                                                   fakes: dict[str, RunningFake]) -> None:
    st = _state(fakes, "amazon-bedrock")
    before = st.request_count
    e = oai.embeddings.create(model=TITAN, input=["first text", "second one here"], dimensions=256,
                              encoding_format="float")
    calls = st.requests[before:]
    assert len(calls) == 2 and all(r.path == "/model/amazon.titan-embed-text-v2:0/invoke" for r in calls)
    assert all(r.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDFAKEBEDROCK/") for r in calls)
    assert sorted(r.body["inputText"] for r in calls) == ["first text", "second one here"]
    assert all(r.body["dimensions"] == 256 and r.body["normalize"] is True for r in calls)
    assert [len(d.embedding) for d in e.data] == [256, 256]
    assert math.isclose(sum(x * x for x in e.data[0].embedding), 1.0, rel_tol=1e-6)
    assert e.usage.prompt_tokens == sum(u.input_tokens for u in st.usages[-2:])
    assert (e.model_extra or {})["cost_nanos"] == e.usage.prompt_tokens * 20
    with pytest.raises(openai.BadRequestError) as err:
        oai.embeddings.create(model=TITAN, input="x", dimensions=300)
    assert "dimensions" in str(err.value)
    assert_books_balance(gateway, key)


def test_models_lists_the_new_offers_as_active(api: httpx.Client, fakes: dict[str, RunningFake]) -> None:
    for model, provider in ((QWEN, "alibaba"), (QWEN_EMBED, "alibaba"), (MINIMAX, "minimax"),
                            (TITAN, "amazon-bedrock")):
        rows = [p for p in api.get(f"/v1/models/{model}").json()["providers"] if p["api_provider_id"] == provider]
        assert rows and all(r["is_active_gateway"] for r in rows), (model, rows)

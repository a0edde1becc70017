"""Cohere v2 as the upstream through the gateway (chat plain and streamed, tools, embeddings), exact charges."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from aistats_gateway.providers.fakes.testing import RunningFake
from tests.support.books import assert_books_balance
from tests.support.gateway import Gateway
from tests.support.inference import Upstream, upstream_fixtures

COMMAND = "cohere/command-a"  # 2.50 in / 10.00 out USD per million tokens
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


fakes, oai = upstream_fixtures({"cohere": Upstream("co-test", prefix="")})


@pytest.fixture(scope="module")
def fake(fakes: dict[str, RunningFake]) -> RunningFake:
    return fakes["cohere"]


def test_cohere_chat_stream_tools_embeddings(oai: openai.OpenAI, fake: RunningFake, gateway: Gateway,
                                             key: str) -> None:
    st: Any = fake.state
    c = oai.chat.completions.create(model=COMMAND, messages=[{"role": "developer", "content": "Echo."},
                                                             {"role": "user", "content": "bonjour cohere"}],
                                    top_p=0.5, stop=["END"])
    assert c.choices[0].message.content == "bonjour cohere"
    sent = st.last_body
    assert sent["messages"][0]["role"] == "system" and sent["p"] == 0.5 and sent["stop_sequences"] == ["END"]
    u = st.usages[-1]
    assert c.usage is not None and c.usage.prompt_tokens == u.input_tokens
    assert (c.model_extra or {})["cost_nanos"] == u.input_tokens * 2500 + u.output_tokens * 10000
    chunks = list(oai.chat.completions.create(model=COMMAND, messages=[{"role": "user", "content": "x y z"}],
                                              stream=True, stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "x y z"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == st.usages[-1].output_tokens
    st.tool_calls = [("weather", {"city": "Lyon"})]
    tools: Any = [{"type": "function", "function": {"name": "weather", "parameters": WEATHER}}]
    t = oai.chat.completions.create(model=COMMAND, messages=[{"role": "user", "content": "Lyon?"}], tools=tools)
    st.tool_calls = None
    call = (t.choices[0].message.tool_calls or [])[0]
    assert t.choices[0].finish_reason == "tool_calls" and json.loads(call.function.arguments) == {"city": "Lyon"}  # type: ignore[union-attr]
    e = oai.embeddings.create(model="cohere/embed-v4", input=["a", "b"], extra_body={"input_type": "search_query"})
    assert len(e.data) == 2 and st.last_body["input_type"] == "search_query"
    assert e.usage.prompt_tokens == st.usages[-1].input_tokens
    assert_books_balance(gateway, key)

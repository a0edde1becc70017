"""Cohere v2 as the upstream through the gateway (chat plain and streamed, tools, embeddings), exact charges."""

from __future__ import annotations

import json
from typing import Any

import openai

from aistats_gateway.providers.fakes.testing import RunningFake
from tests.support.books import assert_books_balance
from tests.support.gateway import Gateway
from tests.support.inference import Upstream, assert_streams_with_usage, fake_fixture, oai_fixture

COMMAND = "cohere/command-a"  # 2.50 in / 10.00 out USD per million tokens
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


fake = fake_fixture("cohere", Upstream("co-test", prefix=""))
oai = oai_fixture("fake")


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
    assert_streams_with_usage(oai, COMMAND, "x y z", st)
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

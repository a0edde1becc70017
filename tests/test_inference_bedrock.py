"""Amazon Bedrock Converse as the upstream through the gateway, SigV4-signed (the fake verifies the
signature): chat plain and streamed (binary event stream), tools, exact charges."""

from __future__ import annotations

import json
from typing import Any

import openai

from aistats_gateway.providers.fakes.testing import RunningFake
from tests.support.books import assert_books_balance
from tests.support.gateway import Gateway
from tests.support.inference import Upstream, assert_streams_with_usage, fake_fixture, oai_fixture

NOVA = "amazon/nova-pro"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


fake = fake_fixture("amazon-bedrock", Upstream("AKIDFAKEBEDROCK:fake-secret-access-key", prefix=""),
                    {"AISTATS_PROVIDER_AMAZON_BEDROCK_REGION": "us-east-1"})
oai = oai_fixture("fake")


def test_bedrock_converse_plain_stream_tools(oai: openai.OpenAI, fake: RunningFake, gateway: Gateway,
                                             key: str) -> None:
    st: Any = fake.state
    c = oai.chat.completions.create(model=NOVA, messages=[{"role": "system", "content": "Echo."},
                                                          {"role": "user", "content": "hello bedrock"}], max_tokens=40)
    assert c.choices[0].message.content == "hello bedrock" and (c.model_extra or {})["provider"] == "amazon-bedrock"
    assert st.last_headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDFAKEBEDROCK/")
    assert st.last_body["system"] == [{"text": "Echo."}] and st.last_body["inferenceConfig"]["maxTokens"] == 40
    u = st.usages[-1]
    assert c.usage is not None and c.usage.prompt_tokens == u.input_tokens
    assert (c.model_extra or {})["cost_nanos"] == u.input_tokens * 800 + u.output_tokens * 3200
    assert_streams_with_usage(oai, NOVA, "p q r", st)
    st.tool_calls = [("weather", {"city": "Nice"})]
    tools: Any = [{"type": "function", "function": {"name": "weather", "parameters": WEATHER}}]
    chunks = list(oai.chat.completions.create(model=NOVA, messages=[{"role": "user", "content": "Nice?"}],
                                              tools=tools, stream=True))
    st.tool_calls = None
    args = "".join(tc.function.arguments or "" for ch in chunks if ch.choices
                   for tc in (ch.choices[0].delta.tool_calls or []) if tc.function)
    assert json.loads(args) == {"city": "Nice"}
    assert_books_balance(gateway, key)

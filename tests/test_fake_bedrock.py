"""The fake Bedrock Converse API driven with boto3 (real SigV4 signing and event-stream parsing) and raw httpx
(bearer API key, unsigned and badly signed requests, the binary framing)."""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3  # type: ignore[import-untyped]
import botocore.exceptions  # type: ignore[import-untyped]
import httpx
import pytest
from botocore.eventstream import EventStreamBuffer  # type: ignore[import-untyped]

from aistats_gateway.providers.fakes import FAKES
from aistats_gateway.providers.fakes.bedrock import EVENTSTREAM
from aistats_gateway.providers.fakes.inference_common import count_tokens
from aistats_gateway.providers.fakes.testing import RunningFake

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
TOOLS = {"tools": [{"toolSpec": {"name": "get_weather", "description": "Weather", "inputSchema": {"json": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}}]}


@pytest.fixture(scope="module")
def fake() -> Iterator[RunningFake]:
    with RunningFake("amazon-bedrock", prefix="") as f:
        yield f


@pytest.fixture
def state(fake: RunningFake) -> Any:
    st = fake.state
    st.reset()
    return st


def client(fake: RunningFake, secret: str = "fake-secret-access-key", region: str = "us-east-1") -> Any:
    return boto3.client("bedrock-runtime", region_name=region, endpoint_url=fake.url,
                        aws_access_key_id="AKIDFAKEBEDROCK", aws_secret_access_key=secret,
                        config=botocore.config.Config(retries={"total_max_attempts": 1, "mode": "standard"}))


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": [{"text": text}]}]


def test_converse_with_sigv4(fake: RunningFake, state: Any) -> None:
    r = client(fake).converse(modelId=MODEL, messages=user("Hello, Bedrock"), system=[{"text": "Be kind."}])
    assert r["output"]["message"] == {"role": "assistant", "content": [{"text": "Hello, Bedrock"}]}
    assert r["stopReason"] == "end_turn"
    assert r["usage"]["inputTokens"] == count_tokens("Hello, Bedrock") + count_tokens("Be kind.")
    assert r["usage"]["outputTokens"] == 3 and r["usage"]["totalTokens"] == r["usage"]["inputTokens"] + 3
    rec = state.last
    assert rec.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDFAKEBEDROCK/")
    assert rec.status == 200 and rec.path == f"/model/{MODEL}/converse"  # decoded path


def test_cached_tokens_and_max_tokens(fake: RunningFake, state: Any) -> None:
    state.cached_tokens = 2
    r = client(fake).converse(modelId=MODEL, messages=user("one two three four"))
    assert (r["usage"]["inputTokens"], r["usage"]["cacheReadInputTokens"], r["usage"]["totalTokens"]) == (2, 2, 8)
    state.reply_text = "a b c d e"
    cut = client(fake).converse(modelId=MODEL, messages=user("x"), inferenceConfig={"maxTokens": 2})
    assert cut["stopReason"] == "max_tokens" and cut["output"]["message"]["content"][0]["text"] == "a b"
    stop = client(fake).converse(modelId=MODEL, messages=user("x"), inferenceConfig={"stopSequences": ["c"]})
    assert stop["stopReason"] == "stop_sequence"


def test_signature_failures(fake: RunningFake, state: Any) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        client(fake, secret="wrong").converse(modelId=MODEL, messages=user("x"))
    assert exc.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        client(fake, region="eu-west-1").converse(modelId=MODEL, messages=user("x"))
    assert exc.value.response["Error"]["Code"] == "InvalidSignatureException"
    url = f"{fake.url}/model/{MODEL.replace(':', '%3A')}/converse"
    unsigned = httpx.post(url, json={"messages": user("x")})
    assert unsigned.status_code == 403 and unsigned.headers["x-amzn-errortype"].startswith(
        "MissingAuthenticationTokenException")
    assert unsigned.json() == {"message": "Missing Authentication Token"}
    bearer = httpx.post(url, json={"messages": user("bearer ok")},
                        headers={"Authorization": "Bearer bedrock-api-key-test"})
    assert bearer.status_code == 200 and bearer.json()["output"]["message"]["content"][0]["text"] == "bearer ok"
    assert state.request_count == 4


@pytest.mark.parametrize("kwargs,needle", [
    ({"messages": [{"role": "assistant", "content": [{"text": "x"}]}]}, "must start with a user message"),
    ({"messages": user("a") + user("b")}, "must alternate between user and assistant"),
    ({"inferenceConfig": {"temperature": 1.5}}, "at 'inferenceConfig.temperature' failed to satisfy constraint"),
    ({"additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": 10}}}, "1024"),
])
def test_validation_exceptions(fake: RunningFake, state: Any, kwargs: dict[str, Any], needle: str) -> None:
    args: dict[str, Any] = {"modelId": MODEL, "messages": user("x"), **kwargs}
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        client(fake).converse(**args)
    assert exc.value.response["Error"]["Code"] == "ValidationException" and needle in str(exc.value)


def test_tool_use_round_trip(fake: RunningFake, state: Any) -> None:
    c = client(fake)
    r = c.converse(modelId=MODEL, messages=user("get_weather Kyoto"), toolConfig=TOOLS)
    assert r["stopReason"] == "tool_use"
    tu = r["output"]["message"]["content"][0]["toolUse"]
    assert tu["name"] == "get_weather" and set(tu["input"]) == {"city"}
    follow = c.converse(modelId=MODEL, toolConfig=TOOLS, messages=[
        *user("get_weather Kyoto"), r["output"]["message"],
        {"role": "user", "content": [{"toolResult": {"toolUseId": tu["toolUseId"], "content": [{"json": {"t": 9}}]}}]}])
    assert follow["output"]["message"]["content"][0]["text"] == '{"t": 9}'
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        c.converse(modelId=MODEL, toolConfig=TOOLS, messages=[*user("x"), r["output"]["message"], *user("none")])
    assert "Expected toolResult blocks" in str(exc.value)


def test_converse_stream_sdk(fake: RunningFake, state: Any) -> None:
    c = client(fake)
    events = list(c.converse_stream(modelId=MODEL, messages=user("Stream, please"))["stream"])
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "messageStart" and kinds[-2:] == ["messageStop", "metadata"]
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == "Stream, please" and events[-1]["metadata"]["usage"]["outputTokens"] == 3
    tool_events = list(c.converse_stream(modelId=MODEL, messages=user("x"), toolConfig={
        **TOOLS, "toolChoice": {"any": {}}})["stream"])
    start = next(e["contentBlockStart"] for e in tool_events if "contentBlockStart" in e)
    assert start["start"]["toolUse"]["name"] == "get_weather"
    args = "".join(e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in tool_events
                   if "contentBlockDelta" in e)
    assert json.loads(args) == {"city": "x"}
    assert next(e["messageStop"] for e in tool_events if "messageStop" in e)["stopReason"] == "tool_use"


def test_stream_binary_framing_and_mid_stream_exception(fake: RunningFake, state: Any) -> None:
    url = f"{fake.url}/model/{MODEL.replace(':', '%3A')}/converse-stream"
    r = httpx.post(url, json={"messages": user("Hi")}, headers={"Authorization": "Bearer bedrock-api-key-test"})
    assert r.headers["content-type"] == EVENTSTREAM
    buf = EventStreamBuffer()
    buf.add_data(r.content)  # CRCs are checked by botocore's parser
    msgs = list(buf)
    assert msgs[0].headers[":event-type"] == "messageStart"
    assert all(m.headers[":message-type"] == "event" and m.headers[":content-type"] == "application/json"
               for m in msgs)
    assert "p" in json.loads(msgs[0].payload)
    state.fail_stream_after = 2
    with pytest.raises(botocore.exceptions.EventStreamError) as exc:
        list(client(fake).converse_stream(modelId=MODEL, messages=user("a b c d"))["stream"])
    assert "internalServerException" in str(exc.value)


def test_injected_throttling(fake: RunningFake, state: Any) -> None:
    state.fail_next, state.fail_status = 1, 429
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        client(fake).converse(modelId=MODEL, messages=user("x"))
    assert exc.value.response["Error"]["Code"] == "ThrottlingException"
    assert "amazon-bedrock" in FAKES


def test_openai_compatible_endpoint(fake: RunningFake, state: Any) -> None:
    import openai
    from openai import OpenAI

    c = OpenAI(api_key="bedrock-api-key-test", base_url=fake.url + "/openai/v1", max_retries=0)
    r = c.chat.completions.create(model="openai.gpt-oss-120b-1:0", messages=[{"role": "user", "content": "via compat"}])
    assert r.choices[0].message.content == "via compat" and state.last.path == "/openai/v1/chat/completions"
    with pytest.raises(openai.AuthenticationError):
        OpenAI(api_key="nope", base_url=fake.url + "/openai/v1", max_retries=0).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}])

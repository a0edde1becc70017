"""The fake OpenAI inference API (chat, responses, embeddings, moderations) and the OpenAI-compatible fakes,
driven with the official openai SDK (streaming included) and raw httpx for wire-level framing."""
from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from aistats_gateway.providers.fakes import FAKES
from aistats_gateway.providers.fakes.inference_common import count_tokens
from aistats_gateway.providers.fakes.testing import RunningFake

WEATHER: list[Any] = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                             "parameters": {"type": "object", "properties": {
                                                 "city": {"type": "string"}, "days": {"type": "integer"}},
                                                 "required": ["city"]}}}]


@pytest.fixture(scope="module")
def fake() -> Iterator[RunningFake]:
    with RunningFake("openai") as f:
        yield f


@pytest.fixture
def state(fake: RunningFake) -> Any:
    st = fake.app.state.inference
    st.reset()
    return st


@pytest.fixture
def client(fake: RunningFake, state: Any) -> OpenAI:
    return OpenAI(api_key="sk-test", base_url=fake.base_url, max_retries=0)


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def test_chat_plain_echo_and_exact_usage(client: OpenAI, state: Any) -> None:
    r = client.chat.completions.create(model="gpt-4o", messages=[
        {"role": "system", "content": "Be brief."}, *user("Hello, world!")])
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.choices[0].message.content == "Hello, world!" and r.choices[0].finish_reason == "stop"
    assert r.usage is not None
    prompt = count_tokens("Be brief.") + count_tokens("Hello, world!")
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (prompt, 4)
    assert r.usage.total_tokens == r.usage.prompt_tokens + 4
    assert state.request_count == 1 and state.last_headers["authorization"] == "Bearer sk-test"
    assert state.last_body["model"] == "gpt-4o" and state.usages[-1].output_tokens == 4


def test_chat_fixed_reply_usage_override_and_max_tokens(client: OpenAI, state: Any) -> None:
    state.reply_text = "one two three four five"
    r = client.chat.completions.create(model="gpt-4o", messages=user("x"), max_tokens=3)
    assert r.choices[0].message.content == "one two three" and r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 3
    state.usage = {"input_tokens": 1000, "output_tokens": 7, "cached_tokens": 200}
    r = client.chat.completions.create(model="gpt-4o", messages=user("x"), stop=["three"])
    assert r.choices[0].message.content == "one two "
    assert r.usage is not None and (r.usage.prompt_tokens, r.usage.completion_tokens) == (1000, 7)
    assert r.usage.prompt_tokens_details is not None and r.usage.prompt_tokens_details.cached_tokens == 200


def test_reasoning_tokens_count_against_max_completion_tokens(client: OpenAI, state: Any) -> None:
    r = client.chat.completions.create(model="gpt-5", messages=user("a b c d e f"), reasoning_effort="low",
                                       max_completion_tokens=10)
    assert r.choices[0].message.content == "a b" and r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 10
    assert r.usage.completion_tokens_details is not None and r.usage.completion_tokens_details.reasoning_tokens == 8
    starved = client.chat.completions.create(model="o3", messages=user("x y"), max_completion_tokens=20)
    assert starved.choices[0].message.content == "" and starved.choices[0].finish_reason == "length"
    assert starved.usage is not None and starved.usage.completion_tokens == 20  # all of it spent reasoning


def test_chat_stream_include_usage_sdk(client: OpenAI, state: Any) -> None:
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=user("Stream me, please."), stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Stream me, please."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == count_tokens(text) == 5


def test_chat_stream_wire_framing(fake: RunningFake, state: Any) -> None:
    body = {"model": "gpt-4o", "messages": user("Hi"), "stream": True}
    with httpx.stream("POST", fake.base_url + "/chat/completions", json=body,
                      headers={"Authorization": "Bearer sk-test"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    frames = raw.split("\n\n")
    assert frames[-1] == "" and frames[-2] == "data: [DONE]"
    assert all(f.startswith("data: {") for f in frames[:-2])
    assert all("usage" not in json.loads(f[6:]) for f in frames[:-2])  # no include_usage: no usage key


def test_chat_tools_plain_stream_and_round_trip(client: OpenAI, state: Any) -> None:
    r = client.chat.completions.create(model="gpt-4o", messages=user("Use get_weather for Paris"), tools=WEATHER)
    call = r.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert r.choices[0].finish_reason == "tool_calls" and r.choices[0].message.content is None
    args = json.loads(call.function.arguments)  # type: ignore[union-attr]
    assert set(args) == {"city", "days"} and isinstance(args["days"], int)
    stream = client.chat.completions.create(model="gpt-4o", messages=user("Use get_weather for Paris"),
                                            tools=WEATHER, stream=True)
    deltas = [c.choices[0].delta for c in stream if c.choices]
    calls = [tc for d in deltas for tc in (d.tool_calls or [])]
    assert calls[0].id and calls[0].function and calls[0].function.name == "get_weather"
    assert len(calls) > 2 and all(tc.id is None for tc in calls[1:])
    assert json.loads("".join(tc.function.arguments or "" for tc in calls if tc.function)) == args
    turns: list[Any] = [*user("Use get_weather for Paris"),
                        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"}]
    r2 = client.chat.completions.create(model="gpt-4o", tools=WEATHER, messages=turns)
    assert r2.choices[0].message.content == "Sunny, 21 C"
    none = client.chat.completions.create(model="gpt-4o", messages=user("no tool mention"), tools=WEATHER)
    assert none.choices[0].message.tool_calls is None


def test_chat_json_schema_and_json_object(client: OpenAI, state: Any) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                               "tags": {"type": "array", "items": {"type": "string"}}},
              "required": ["name", "age", "tags"], "additionalProperties": False}
    r = client.chat.completions.create(model="gpt-4o", messages=user("Describe Ada"), response_format={
        "type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}})
    data = json.loads(r.choices[0].message.content or "")
    assert set(data) == {"name", "age", "tags"} and isinstance(data["age"], int) and isinstance(data["tags"], list)
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="gpt-4o", messages=user("hello"), response_format={"type": "json_object"})
    assert exc.value.param == "messages"
    ok = client.chat.completions.create(model="gpt-4o", messages=user("reply in JSON"),
                                        response_format={"type": "json_object"})
    assert json.loads(ok.choices[0].message.content or "") == {"echo": "reply in JSON"}


@pytest.mark.parametrize("kwargs,param,code", [
    ({"messages": []}, "messages", "empty_array"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role", "invalid_value"),
    ({"temperature": 3}, "temperature", "decimal_above_max_value"),
    ({"messages": [{"role": "tool", "tool_call_id": "call_1", "content": "x"}]}, "messages.[0].role", None),
    ({"tool_choice": "auto"}, "tool_choice", None),
    ({"stream_options": {"include_usage": True}}, "stream_options", None),
    ({"model": "gpt-5", "max_tokens": 5}, "max_tokens", "unsupported_parameter"),
    ({"model": "o3", "temperature": 0.2}, "temperature", "unsupported_value"),
    ({"reasoning_effort": "low"}, "reasoning_effort", "unsupported_parameter"),
])
def test_chat_validation_errors(client: OpenAI, state: Any, kwargs: dict[str, Any], param: str,
                                code: str | None) -> None:
    args: dict[str, Any] = {"model": "gpt-4o", "messages": user("x"), **kwargs}
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(**args)
    assert exc.value.status_code == 400 and exc.value.param == param and exc.value.code == code
    assert isinstance(exc.value.body, dict) and exc.value.body["type"] == "invalid_request_error"


def test_unknown_param_missing_param_and_bad_json(fake: RunningFake, state: Any) -> None:
    h = {"Authorization": "Bearer sk-test"}
    r = httpx.post(fake.base_url + "/chat/completions", headers=h,
                   json={"model": "gpt-4o", "messages": user("x"), "bogus": 1})
    assert r.status_code == 400 and r.json()["error"]["message"] == "Unrecognized request argument supplied: bogus"
    r = httpx.post(fake.base_url + "/chat/completions", headers=h, json={"model": "gpt-4o"})
    assert r.json()["error"] == {"message": "Missing required parameter: 'messages'.", "type": "invalid_request_error",
                                 "param": "messages", "code": "missing_required_parameter"}
    r = httpx.post(fake.base_url + "/chat/completions", headers={**h, "content-type": "application/json"},
                   content=b"{nope")
    assert r.status_code == 400 and "could not parse the JSON body" in r.json()["error"]["message"]
    assert state.request_count == 3


def test_auth_and_injected_failures(fake: RunningFake, client: OpenAI, state: Any) -> None:
    bad = OpenAI(api_key="sk-wrong", base_url=fake.base_url, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as exc:
        bad.chat.completions.create(model="gpt-4o", messages=user("x"))
    assert exc.value.code == "invalid_api_key"
    state.fail_next, state.fail_status, state.retry_after_seconds = 1, 429, 2
    with pytest.raises(openai.RateLimitError) as rl:
        client.chat.completions.create(model="gpt-4o", messages=user("x"))
    assert rl.value.response.headers["retry-after"] == "2" and rl.value.code == "rate_limit_exceeded"
    state.fail_next, state.fail_status, state.retry_after_seconds = 1, 503, 0
    retrying = OpenAI(api_key="sk-test", base_url=fake.base_url, max_retries=1)
    again = retrying.chat.completions.create(model="gpt-4o", messages=user("again"))
    assert again.choices[0].message.content == "again"
    assert state.request_count == 4 and [r.status for r in state.requests] == [401, 429, 503, 200]


def test_mid_stream_error_disconnect_and_first_byte_delay(fake: RunningFake, client: OpenAI, state: Any) -> None:
    state.reply_text = "a b c d e f"
    state.fail_stream_after = 3
    got: list[str] = []
    with pytest.raises(openai.APIError) as exc:
        for c in client.chat.completions.create(model="gpt-4o", messages=user("x"), stream=True):
            got.append(c.choices[0].delta.content or "")
    assert "server had an error" in exc.value.message and "".join(got) == "a b"
    state.stream_fail_mode = "disconnect"
    with pytest.raises(openai.APIConnectionError):  # the connection drops mid-body
        list(client.chat.completions.create(model="gpt-4o", messages=user("x"), stream=True))
    state.fail_stream_after, state.first_byte_delay = None, 1.0
    slow = OpenAI(api_key="sk-test", base_url=fake.base_url, max_retries=0, timeout=0.2)
    with pytest.raises(openai.APITimeoutError):
        slow.chat.completions.create(model="gpt-4o", messages=user("x"))


def test_responses_plain_stream_tools_and_previous(client: OpenAI, state: Any) -> None:
    r = client.responses.create(model="gpt-4o", input="Hello there", instructions="Be kind.")
    assert r.output_text == "Hello there" and r.status == "completed"
    assert r.usage is not None and r.usage.input_tokens == count_tokens("Hello there") + count_tokens("Be kind.")
    assert r.usage.output_tokens == 2
    reasoning = client.responses.create(model="gpt-5", input="Think", reasoning={"effort": "high"})
    assert reasoning.output[0].type == "reasoning" and reasoning.usage is not None
    assert reasoning.usage.output_tokens_details.reasoning_tokens == 128
    with client.responses.stream(model="gpt-4o", input="Stream it now") as st:
        types = [e.type for e in st]
        final = st.get_final_response()
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert types.count("response.output_text.delta") == 3 and types[-1] == "response.completed"
    assert final.output_text == "Stream it now"
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {
        "q": {"type": "string"}}, "required": ["q"]}}]
    fc = client.responses.create(model="gpt-4o", input="please lookup cats", tools=tools)  # type: ignore[arg-type]
    call = fc.output[0]
    assert call.type == "function_call" and json.loads(call.arguments) == {"q": "please lookup cats"}
    follow = client.responses.create(model="gpt-4o", previous_response_id=fc.id, tools=tools,  # type: ignore[arg-type]
                                     input=[{"type": "function_call_output", "call_id": call.call_id,
                                             "output": "cats are great"}])
    assert follow.output_text == "cats are great"
    with pytest.raises(openai.BadRequestError) as exc:
        client.responses.create(model="gpt-4o", input=[{"type": "function_call_output", "call_id": "call_zz",
                                                        "output": "x"}])
    assert exc.value.param == "input"
    with pytest.raises(openai.BadRequestError) as exc:
        client.responses.create(model="gpt-4o", input="x", max_output_tokens=4)
    assert exc.value.code == "integer_below_min_value"
    state.reply_text = " ".join(["word"] * 40)
    inc = client.responses.create(model="gpt-4o", input="x", max_output_tokens=16)
    assert inc.status == "incomplete" and inc.incomplete_details is not None
    assert inc.incomplete_details.reason == "max_output_tokens"


def test_responses_stream_wire_and_error_event(fake: RunningFake, state: Any) -> None:
    state.fail_stream_after = 4
    with httpx.stream("POST", fake.base_url + "/responses", headers={"Authorization": "Bearer sk-test"},
                      json={"model": "gpt-4o", "input": "one two three", "stream": True}) as r:
        frames = [f for f in r.read().decode().split("\n\n") if f]
    assert frames[0].startswith("event: response.created\ndata: {")
    head, data = frames[-1].split("\n")
    assert head == "event: error"
    assert json.loads(data[6:]) == {"type": "error", "code": "server_error", "param": None, "sequence_number": 4,
                                    "message": "The server had an error while processing your request. "
                                               "Sorry about that!"}


def test_embeddings_float_base64_dimensions(client: OpenAI, state: Any) -> None:
    a = client.embeddings.create(model="text-embedding-3-small", input=["hello world", "bye"])
    assert [len(d.embedding) for d in a.data] == [1536, 1536] and a.usage.prompt_tokens == 3
    assert abs(sum(v * v for v in a.data[0].embedding) - 1) < 1e-3
    b = client.embeddings.create(model="text-embedding-3-large", input="hello world", dimensions=256)
    assert len(b.data[0].embedding) == 256
    again = client.embeddings.create(model="text-embedding-3-small", input="hello world")
    assert again.data[0].embedding == a.data[0].embedding
    raw = httpx.post(str(client.base_url) + "embeddings", headers={"Authorization": "Bearer sk-test"},
                     json={"model": "text-embedding-3-small", "input": "hello world", "encoding_format": "base64"})
    packed = base64.b64decode(raw.json()["data"][0]["embedding"])
    floats = struct.unpack(f"<{len(packed) // 4}f", packed)
    assert len(floats) == 1536 and all(abs(x - y) < 1e-6 for x, y in zip(floats, a.data[0].embedding))
    with pytest.raises(openai.BadRequestError) as exc:
        client.embeddings.create(model="text-embedding-ada-002", input="x", dimensions=8)
    assert exc.value.param == "dimensions"
    with pytest.raises(openai.BadRequestError) as exc:
        client.embeddings.create(model="text-embedding-3-small", input=[""])
    assert exc.value.param == "input"


def test_moderations(client: OpenAI, state: Any) -> None:
    m = client.moderations.create(input=["I will kill the process", "have a nice day"])
    assert [r.flagged for r in m.results] == [True, False] and m.results[0].categories.violence
    assert m.model == "omni-moderation-latest" and m.id.startswith("modr-")
    parts: list[Any] = [{"type": "text", "text": "hello"},
                        {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]
    mm = client.moderations.create(model="omni-moderation-latest", input=parts)
    assert len(mm.results) == 1 and "image" in mm.results[0].category_applied_input_types.violence


@pytest.mark.parametrize("name", ["mistral", "deepseek", "groq", "together", "openai-compatible"])
def test_compat_fakes_with_openai_sdk(name: str) -> None:
    with RunningFake(name) as f:
        key = f.state.api_key
        c = OpenAI(api_key=key, base_url=f.base_url, max_retries=0)
        r = c.chat.completions.create(model="some-model", messages=user("Hi compat"), extra_body={"top_k": 5})
        assert r.choices[0].message.content == "Hi compat"
        s = list(c.chat.completions.create(model="m", messages=user("a b"), stream=True,
                                           stream_options={"include_usage": True}))
        assert s[-1].usage is not None and s[-1].usage.completion_tokens == 2
        assert "obfuscation" not in (s[1].model_extra or {})
        e = c.embeddings.create(model="embed-model", input="x")
        assert len(e.data[0].embedding) == 1536
        r404 = httpx.post(f.base_url + "/responses", headers={"Authorization": f"Bearer {key}"}, json={})
        assert r404.status_code == 404  # the OpenAI-only routes are not on the compatible fakes
        moderations = httpx.post(f.base_url + "/moderations", headers={"Authorization": f"Bearer {key}"},
                                 json={"input": "x", "colour": "red"})
        if name == "mistral":  # Mistral's own moderation API: unknown fields are a 422 in its error shape
            assert moderations.status_code == 422 and moderations.json()["object"] == "error"
            assert "body.colour" in moderations.json()["message"]
        else:
            assert moderations.status_code == 404
        bad = httpx.post(f.base_url + "/chat/completions", json={"model": "m", "messages": []},
                         headers={"Authorization": f"Bearer {key}"})
        body = bad.json()
        if name == "mistral":
            assert body["object"] == "error" and body["param"] == "messages"
        else:
            assert body["error"]["param"] == "messages"
        # the unknown routes are not requests the API handled
        assert f.state.request_count == (5 if name == "mistral" else 4)


def test_xai_fake_serves_video_and_chat() -> None:
    with RunningFake("x-ai") as f:
        c = OpenAI(api_key="xai-test", base_url=f.base_url, max_retries=0)
        assert c.chat.completions.create(model="grok-4", messages=user("yo")).choices[0].message.content == "yo"
        r = httpx.post(f.base_url + "/chat/completions", json={"model": "grok-4", "messages": user("x")},
                       headers={"Authorization": "Bearer nope"})
        assert r.status_code == 400 and r.json()["code"] == "Client specified an invalid argument"
        assert f.app.state.inference.request_count == 2 and f.state.requests == []
    assert "x-ai" in FAKES and "openai-compatible" in FAKES


@pytest.mark.parametrize("name,where", [("mistral", "final_chunk"), ("together", "final_chunk"),
                                        ("groq", "x_groq"), ("deepseek", "openai")])
def test_compat_streamed_usage_styles(name: str, where: str) -> None:
    with RunningFake(name) as f:
        h = {"Authorization": f"Bearer {f.state.api_key}"}
        with httpx.stream("POST", f.base_url + "/chat/completions", headers=h, json={
                "model": "m", "messages": user("one two"), "stream": True,
                "stream_options": {"include_usage": True}}) as r:
            chunks = [json.loads(x[6:]) for x in r.read().decode().split("\n\n") if x.startswith("data: {")]
        finish = next(c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"])
        if where == "final_chunk":
            assert finish["usage"]["completion_tokens"] == 2 and chunks[-1] is finish
        elif where == "x_groq":
            assert finish["x_groq"]["usage"]["completion_tokens"] == 2 and chunks[-1]["choices"] == []
        else:
            assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_cache_miss_tokens"] == 2


def test_keyless_compat_server_and_first_event_delay(state: Any, fake: RunningFake) -> None:
    with RunningFake("openai-compatible", api_key="") as f:
        c = OpenAI(api_key="anything", base_url=f.base_url, max_retries=0)
        assert c.chat.completions.create(model="llama3", messages=user("hi")).choices[0].message.content == "hi"
    state.first_event_delay = 0.3
    with httpx.stream("POST", fake.base_url + "/chat/completions", headers={"Authorization": "Bearer sk-test"},
                      json={"model": "gpt-4o", "messages": user("x"), "stream": True}) as r:
        assert r.status_code == 200  # headers arrive before the first event
        head_at = state.requests[-1].at
        next(r.iter_raw())
        assert time.monotonic() - head_at >= 0.3


def test_reset_restores_the_configured_state() -> None:
    with RunningFake("groq", reply_text="fixed") as f:
        OpenAI(api_key="gsk_test", base_url=f.base_url).chat.completions.create(model="m", messages=user("x"))
        assert f.state.request_count == 1 and len(f.state.usages) == 1
        f.state.fail_next, f.state.reply_text = 3, "changed"
        f.state.reset()
        assert (f.state.fail_next, f.state.reply_text, f.state.requests, f.state.usage_style) == (
            0, "fixed", [], "x_groq")

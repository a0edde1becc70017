"""The built-in local text models (``local/echo``, ``local/hash-embed``, ``local/keyword-moderation``):
no provider key, free, deterministic; called through real HTTP with the openai and anthropic SDKs on
both backends, through the same routing, billing and generation path as any provider."""

from __future__ import annotations

import base64
import json
import math
import os
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import jsonschema
import openai
import pytest

from tests.support.books import assert_books_balance
from tests.support.gateway import BACKENDS, Gateway, running_gateway
from tests.support.inference import generation

ECHO = "local/echo"
WEATHER = {"type": "object", "properties": {"city": {"type": "string", "minLength": 2},
                                            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                                            "days": {"type": "integer", "minimum": 1, "maximum": 7}},
           "required": ["city", "unit"], "additionalProperties": False}
TOOLS: list[Any] = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]


@pytest.fixture(scope="module", params=BACKENDS)
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with pytest.MonkeyPatch.context() as mp:
        for name in [k for k in os.environ if k.startswith("AISTATS_PROVIDER")]:
            mp.delenv(name)  # no provider key, no providers file: only what is built in
        with running_gateway(request.param, tmp_path_factory.mktemp("gw")) as gw:
            yield gw


@pytest.fixture(scope="module")
def poor(gateway: Gateway) -> str:
    """A key whose workspace has no credits: the local models are free."""
    return gateway.create_key("nothing")


@pytest.fixture(scope="module")
def oai(gateway: Gateway, poor: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=poor, base_url=gateway.base_url + "/v1", max_retries=0)


@pytest.fixture(scope="module")
def claude(gateway: Gateway, poor: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=poor, base_url=gateway.base_url, max_retries=0)


def test_models_lists_the_local_text_models_as_active(gateway: Gateway, poor: str) -> None:
    api = gateway.client(poor)
    for model, endpoint in ((ECHO, "chat.completions"), ("local/hash-embed", "embeddings"),
                            ("local/keyword-moderation", "moderations")):
        body = api.get(f"/v1/models/{model}").json()
        (row,) = body["providers"]
        assert (row["api_provider_id"], row["endpoint"], row["is_active_gateway"]) == ("local", endpoint, True)
        assert all(p["price"] == "0" for p in row["pricing"])


def _metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def test_metrics_count_the_sqlite_group_commits_of_calls(oai: openai.OpenAI, gateway: Gateway) -> None:
    before = httpx.get(gateway.base_url + "/metrics").text
    if gateway.backend != "sqlite":
        assert "aistats_db_group_commits_total" not in before
        return
    oai.chat.completions.create(model=ECHO, messages=[{"role": "user", "content": "count me"}])
    after = httpx.get(gateway.base_url + "/metrics").text
    groups = _metric(after, "aistats_db_group_commits_total") - _metric(before, "aistats_db_group_commits_total")
    txs = (_metric(after, "aistats_db_group_commit_transactions_total")
           - _metric(before, "aistats_db_group_commit_transactions_total"))
    assert groups >= 1 and txs >= 2 and txs >= groups  # the call's open and close at least
    assert "aistats_db_group_commits_handed_over_total" in after


def test_chat_plain_echoes_with_usage_and_a_generation(oai: openai.OpenAI, gateway: Gateway, poor: str) -> None:
    c = oai.chat.completions.create(model=ECHO, messages=[{"role": "system", "content": "Be brief."},
                                                          {"role": "user", "content": "Hello, local world!"}])
    assert c.choices[0].message.content == "Hello, local world!" and c.choices[0].finish_reason == "stop"
    extra: dict[str, Any] = c.model_dump()
    assert extra["provider"] == "local" and extra["cost_nanos"] == 0
    assert c.usage is not None and c.usage.completion_tokens == 5  # Hello , local world !
    assert c.usage.prompt_tokens > 0 and c.usage.total_tokens == c.usage.prompt_tokens + 5
    gen = generation(gateway.client(poor), c.id)
    assert gen["provider"] == "local" and gen["model"] == ECHO
    again = oai.chat.completions.create(model=ECHO, messages=[{"role": "user", "content": "Hello, local world!"}],
                                        temperature=1.7, seed=3)
    assert again.choices[0].message.content == c.choices[0].message.content  # deterministic


def test_chat_stream_token_by_token_with_usage(oai: openai.OpenAI) -> None:
    chunks = list(oai.chat.completions.create(model=ECHO, stream=True, stream_options={"include_usage": True},
                                              messages=[{"role": "user", "content": "one two three four"}]))
    texts = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert texts == ["one", " two", " three", " four"]
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finish == ["stop"]
    usage = [ch.usage for ch in chunks if ch.usage is not None]
    assert usage and usage[-1].completion_tokens == 4


def test_max_tokens_and_stop_are_honoured(oai: openai.OpenAI) -> None:
    msg = [{"role": "user", "content": "alpha beta gamma delta epsilon"}]
    cut = oai.chat.completions.create(model=ECHO, messages=msg, max_tokens=2)  # type: ignore[arg-type]
    assert cut.choices[0].message.content == "alpha beta" and cut.choices[0].finish_reason == "length"
    assert cut.usage is not None and cut.usage.completion_tokens == 2
    stopped = oai.chat.completions.create(model=ECHO, messages=msg, stop=[" delta", "zzz"])  # type: ignore[arg-type]
    assert stopped.choices[0].message.content == "alpha beta gamma" and stopped.choices[0].finish_reason == "stop"
    streamed = "".join(ch.choices[0].delta.content or "" for ch in oai.chat.completions.create(
        model=ECHO, messages=msg, max_completion_tokens=3, stream=True) if ch.choices)  # type: ignore[arg-type]
    assert streamed == "alpha beta gamma"


def test_forced_tool_call_has_arguments_valid_against_the_schema(oai: openai.OpenAI) -> None:
    msg: Any = [{"role": "user", "content": "What about Paris?"}]
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        c = oai.chat.completions.create(model=ECHO, messages=msg, tools=TOOLS, tool_choice=choice)  # type: ignore[arg-type]
        (call,) = c.choices[0].message.tool_calls or []
        assert c.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"  # type: ignore[union-attr]
        args = json.loads(call.function.arguments)  # type: ignore[union-attr]
        jsonschema.validate(args, WEATHER)
        assert args["unit"] == "celsius" and "Paris" in args["city"]
    auto = oai.chat.completions.create(model=ECHO, messages=msg, tools=TOOLS)
    assert auto.choices[0].message.tool_calls is None and auto.choices[0].message.content == "What about Paris?"
    named: Any = [{"role": "user", "content": "get weather for Oslo"}]
    called = oai.chat.completions.create(model=ECHO, messages=named, tools=TOOLS)
    assert called.choices[0].message.tool_calls and called.choices[0].message.tool_calls[0].id.startswith("call_")
    # The tool loop: the result is answered with text.
    call = called.choices[0].message.tool_calls[0]
    follow: Any = [*named, called.choices[0].message.model_dump(exclude_none=True),
                   {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}]
    done = oai.chat.completions.create(model=ECHO, messages=follow, tools=TOOLS)
    assert done.choices[0].message.content == "get_weather returned: sunny, 21 C"
    # Streamed tool call: the arguments arrive in pieces and join to valid JSON.
    pieces = [tc.function.arguments for ch in oai.chat.completions.create(
        model=ECHO, messages=msg, tools=TOOLS, tool_choice="required", stream=True)
        if ch.choices and ch.choices[0].delta.tool_calls for tc in ch.choices[0].delta.tool_calls
        if tc.function and tc.function.arguments]
    assert len(pieces) > 3
    jsonschema.validate(json.loads("".join(pieces)), WEATHER)


def test_json_schema_response_format_is_valid_json(oai: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}, "score": {"type": "number",
              "exclusiveMinimum": 0, "maximum": 1}, "tags": {"type": "array", "items": {"type": "string"},
              "minItems": 2}, "when": {"type": "string", "format": "date"}},
              "required": ["answer", "score", "tags", "when"], "additionalProperties": False}
    c = oai.chat.completions.create(model=ECHO, messages=[{"role": "user", "content": "rate this"}],
                                    response_format={"type": "json_schema", "json_schema": {
                                        "name": "rating", "schema": schema, "strict": True}})
    doc = json.loads(c.choices[0].message.content or "")
    jsonschema.validate(doc, schema)
    assert doc["answer"] == "rate this"
    obj = oai.chat.completions.create(model=ECHO, messages=[{"role": "user", "content": "hi"}],
                                      response_format={"type": "json_object"})
    assert json.loads(obj.choices[0].message.content or "") == {"message": "hi"}


def test_responses_plain_and_streaming(oai: openai.OpenAI) -> None:
    r = oai.responses.create(model=ECHO, input="Hello responses", instructions="be terse", max_output_tokens=16)
    assert r.output_text == "Hello responses"
    assert r.usage is not None and r.usage.output_tokens == 2
    events = list(oai.responses.create(model=ECHO, input="a b c", stream=True))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert deltas == ["a", " b", " c"]
    done = [e for e in events if e.type == "response.completed"]
    assert done and done[0].response.usage is not None and done[0].response.usage.output_tokens == 3


def test_anthropic_messages_plain_streaming_tools(claude: anthropic.Anthropic) -> None:
    m = claude.messages.create(model=ECHO, max_tokens=3, messages=[{"role": "user", "content": "one two three four"}])
    assert m.content[0].type == "text" and m.content[0].text == "one two three"
    assert m.stop_reason == "max_tokens" and m.usage.output_tokens == 3
    s = claude.messages.create(model=ECHO, max_tokens=50, stop_sequences=["!"],
                               messages=[{"role": "user", "content": "Hi there! Bye"}])
    assert s.content[0].text == "Hi there" and s.stop_reason == "stop_sequence"  # type: ignore[union-attr]
    assert s.stop_sequence == "!"
    with claude.messages.stream(model=ECHO, max_tokens=50, stop_sequences=["!"],
                                messages=[{"role": "user", "content": "Hi there! Bye"}]) as ss:
        streamed = ss.get_final_message()
    assert streamed.stop_reason == "stop_sequence" and streamed.stop_sequence == "!"  # the stream says it too
    with claude.messages.stream(model=ECHO, max_tokens=50, messages=[{"role": "user", "content": "x y z"}]) as st:
        texts = list(st.text_stream)
        final = st.get_final_message()
    assert texts == ["x", " y", " z"] and final.usage.output_tokens == 3
    t = claude.messages.create(model=ECHO, max_tokens=100, tool_choice={"type": "any"},
                               tools=[{"name": "get_weather", "input_schema": WEATHER}],  # type: ignore[list-item]
                               messages=[{"role": "user", "content": "Rome"}])
    (use,) = [b for b in t.content if b.type == "tool_use"]
    assert t.stop_reason == "tool_use" and use.name == "get_weather"
    jsonschema.validate(use.input, WEATHER)


def test_embeddings_are_normalised_deterministic_and_honour_dimensions(oai: openai.OpenAI) -> None:
    e = oai.embeddings.create(model="local/hash-embed", input=["the cat sat", "the cat sat", "quantum flux"])
    a, b, c = (d.embedding for d in e.data)
    assert len(a) == 384 and a == b and e.usage.prompt_tokens == 3 + 3 + 2
    assert math.isclose(sum(x * x for x in a), 1.0, rel_tol=1e-6)  # float32 on the wire (the SDK asks for base64)
    near = oai.embeddings.create(model="local/hash-embed", input="the cat slept").data[0].embedding
    assert sum(x * y for x, y in zip(a, near, strict=True)) > sum(x * y for x, y in zip(a, c, strict=True))
    small = oai.embeddings.create(model="local/hash-embed", input="hello", dimensions=64)
    assert len(small.data[0].embedding) == 64
    b64 = oai.embeddings.create(model="local/hash-embed", input="hello", dimensions=64, encoding_format="base64")
    assert len(base64.b64decode(str(b64.data[0].embedding))) == 64 * 4  # little-endian float32
    with pytest.raises(openai.BadRequestError) as err:
        oai.embeddings.create(model="local/hash-embed", input="hello", dimensions=5000)
    assert "dimensions" in str(err.value)


def test_moderation_flags_keywords_in_openai_shape(oai: openai.OpenAI) -> None:
    r = oai.moderations.create(model="local/keyword-moderation",
                               input=["have a nice day", "I will kill you, you idiot"])
    ok, bad = r.results
    assert not ok.flagged and ok.category_scores.violence < 0.01
    assert bad.flagged and bad.categories.violence and bad.categories.harassment
    assert bad.categories.harassment_threatening and not bad.categories.sexual
    assert bad.category_scores.violence >= 0.5
    parts = oai.moderations.create(model="local/keyword-moderation", input=[
        {"type": "text", "text": "gore"}, {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}])
    (one,) = parts.results
    assert one.flagged and one.categories.violence_graphic and one.categories.violence


def test_gateway_mode_batch_runs_on_the_local_models(gateway: Gateway, poor: str) -> None:
    api = gateway.client(poor)
    r = api.post("/v1/batches", json={"endpoint": "/v1/chat/completions", "completion_window": "24h",
                                      "model": ECHO, "requests": [
                                          {"custom_id": "a", "body": {"messages": [{"role": "user", "content": "A1"}]}},
                                          {"custom_id": "b", "body": {"max_tokens": 1, "messages": [
                                              {"role": "user", "content": "B2 C3"}]}}]})
    assert r.status_code in (200, 201, 202), r.text
    batch = r.json()
    deadline = time.monotonic() + 60
    while batch["status"] not in ("completed", "failed", "expired", "cancelled"):
        assert time.monotonic() < deadline, batch
        time.sleep(0.2)
        batch = api.get(f"/v1/batches/{batch['id']}").json()
    assert batch["status"] == "completed", batch
    out = api.get(f"/v1/files/{batch['output_file_id']}/content")
    rows = {row["custom_id"]: row for row in map(json.loads, out.text.splitlines())}
    assert rows["a"]["response"]["body"]["choices"][0]["message"]["content"] == "A1"
    assert rows["b"]["response"]["body"]["choices"][0]["finish_reason"] == "length"


def test_free_calls_balance_the_books(gateway: Gateway, poor: str, oai: openai.OpenAI) -> None:
    oai.chat.completions.create(model=ECHO, messages=[{"role": "user", "content": "books"}])
    assert_books_balance(gateway, poor)


def test_local_chat_fails_cleanly_on_bad_input(gateway: Gateway, poor: str) -> None:
    api: httpx.Client = gateway.client(poor)
    r = api.post("/v1/chat/completions", json={"model": ECHO, "messages": []})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"


def test_the_readme_local_models_example_runs_as_written(gateway: Gateway, poor: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if 'model="local/echo"' in b]
    code = block.replace('"aistats_v1_sk_..."', repr(poor)).replace('"http://127.0.0.1:8080/v1"',
                                                                      repr(gateway.base_url + "/v1"))
    exec(compile(code, "README.md", "exec"), {})  # the README's own example, against this gateway
    out = capsys.readouterr().out
    assert out.startswith("Hello, gateway!") and "one two three" in out and '{"city":"Paris"}' in out
    assert "Hi from Responses" in out and out.rstrip().endswith("True")


@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": {"n": {"type": "integer", "exclusiveMinimum": 3, "multipleOf": 5}},
     "required": ["n"]},
    {"type": "object", "properties": {"x": {"anyOf": [{"type": "null"}, {"type": "number", "minimum": 2.5}]},
                                      "when": {"type": "string", "format": "date-time"},
                                      "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 3,
                                               "maxItems": 3}}},
    {"$defs": {"pt": {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}},
     "type": "object", "properties": {"a": {"$ref": "#/$defs/pt"}, "b": {"allOf": [{"$ref": "#/$defs/pt"},
                                                                                  {"required": ["x"]}]}}},
    {"type": ["null", "string"], "minLength": 40, "maxLength": 50},
])
def test_schema_values_validate(schema: dict[str, Any]) -> None:
    from aistats_gateway.providers.local_text.schema_value import value_for

    jsonschema.validate(value_for(schema, "the user's words"), schema)


def test_schema_values_are_bounded_whatever_the_schema() -> None:
    from aistats_gateway.providers.local_text.schema_value import MAX_ITEMS, value_for

    fan = {"properties": {k: {"$ref": "#/$defs/n"} for k in "abcdefghij"}}
    assert len(json.dumps(value_for({"$defs": {"n": fan}, **fan}, "x"))) < 200_000
    huge = value_for({"type": "array", "minItems": 10**12, "items": {"type": "string", "minLength": 10**12}}, "x")
    assert len(huge) == MAX_ITEMS and all(len(x) <= 4096 for x in huge)

"""Inference end to end through real HTTP against the provider fakes, on SQLite and PostgreSQL:
openai SDK chat (plain, streaming, tools, JSON schema), responses, embeddings, moderations; the
anthropic SDK against an OpenAI model; fallback on 503; 402 and tpm 429 with nothing sent upstream;
exact charges (ledger recomputes, settlements equal generations' cost_nanos)."""

from __future__ import annotations

import json
import time
from typing import Any

import anthropic
import httpx
import openai
import pytest
from sqlalchemy import func, select, update

from aistats_gateway.auth import keys
from aistats_gateway.auth.tables import ApiKey
from aistats_gateway.billing.tables import LedgerEntry
from aistats_gateway.inference.tables import Generation
from aistats_gateway.providers.fakes.testing import RunningFake
from tests.support.books import assert_books_balance, workspace_of
from tests.support.gateway import Gateway, run_async
from tests.support.inference import CHAT_KNOBS, generation, reset_knobs, token_nanos, upstream_fixtures
from tests.support.inference import inference_state as inf

NANOS = 1_000_000_000
MINI = "openai/gpt-4o-mini"  # 0.15 / 0.075 cached / 0.60 USD per million tokens
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
           "additionalProperties": False}


def expected_nanos(input_tokens: int, output_tokens: int, cached: int = 0,
                   per_million_usd: tuple[str, str, str] = ("0.15", "0.075", "0.60")) -> int:
    """Pro-rata token cost, each line rounded up to a whole nano-USD (``MINI`` prices by default)."""
    return token_nanos(*zip((input_tokens - cached, cached, output_tokens), per_million_usd))


fakes, oai = upstream_fixtures({"openai": "sk-test", "groq": "gsk_test", "together": "together-test"})


@pytest.fixture(autouse=True)
def reset(fakes: dict[str, RunningFake]) -> None:
    reset_knobs(fakes, CHAT_KNOBS)


def db(gateway: Gateway, fn: Any) -> Any:
    return run_async(fn, gateway.settings)


def test_chat_plain_charges_exactly_and_records_the_generation(oai: openai.OpenAI, api: httpx.Client,
                                                                gateway: Gateway, key: str,
                                                                fakes: dict[str, RunningFake]) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model=MINI, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}],
        max_tokens=50, temperature=0.2)
    assert "upstream;dur=" in raw.headers["server-timing"] and raw.headers.get("x-request-id")
    c = raw.parse()
    assert c.choices[0].message.content == "Hello there" and c.choices[0].finish_reason == "stop"
    extra = c.model_extra or {}
    assert c.id.startswith("gen_") and extra["provider"] == "openai"
    sent = inf(fakes["openai"]).last_body
    assert sent["model"] == "gpt-4o-mini" and sent["max_completion_tokens"] == 50
    u = inf(fakes["openai"]).usages[-1]
    assert c.usage is not None and c.usage.prompt_tokens == u.input_tokens
    want = expected_nanos(u.input_tokens, u.output_tokens, u.cached_tokens)
    assert extra["cost_nanos"] == want and (c.usage.model_extra or {})["cost"] == pytest.approx(want / NANOS)
    rec = generation(api, c.id)
    assert rec["status"] == "completed" and rec["provider"] == "openai" and rec["cost_nanos"] == want
    assert rec["usage"]["input_tokens"] == u.input_tokens and rec["attempts"][0]["ok"]
    assert api.get("/v1/generations", params={"id": c.id}).json()["id"] == c.id
    other = gateway.client(gateway.create_key("other", credits_usd=1))
    assert other.get(f"/v1/generations/{c.id}").status_code == 404
    assert_books_balance(gateway, key)


def test_chat_stream_with_usage_chunk(oai: openai.OpenAI, gateway: Gateway, key: str,
                                      fakes: dict[str, RunningFake]) -> None:
    stream = oai.chat.completions.create(model=MINI, messages=[{"role": "user", "content": "one two three four"}],
                                         stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "one two three four"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    u = inf(fakes["openai"]).usages[-1]
    assert last.usage.completion_tokens == u.output_tokens
    assert (last.model_extra or {})["cost_nanos"] == expected_nanos(u.input_tokens, u.output_tokens, u.cached_tokens)
    assert inf(fakes["openai"]).last_body["stream_options"] == {"include_usage": True}
    assert_books_balance(gateway, key)


def test_chat_tools_plain_and_streaming(oai: openai.OpenAI, fakes: dict[str, RunningFake]) -> None:
    inf(fakes["openai"]).tool_calls = [("weather", {"city": "Paris"})]
    tools: Any = [{"type": "function", "function": {"name": "weather", "parameters": WEATHER}}]
    c = oai.chat.completions.create(model=MINI, messages=[{"role": "user", "content": "Weather in Paris?"}],
                                    tools=tools, tool_choice="required")
    call = c.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert c.choices[0].finish_reason == "tool_calls" and call.function.name == "weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    chunks = list(oai.chat.completions.create(model=MINI, messages=[{"role": "user", "content": "Paris?"}],
                                              tools=tools, stream=True))
    args = "".join(tc.function.arguments or "" for ch in chunks if ch.choices
                   for tc in (ch.choices[0].delta.tool_calls or []) if tc.function)
    assert json.loads(args) == {"city": "Paris"}
    # the tool result goes back upstream as a tool message
    inf(fakes["openai"]).tool_calls = None
    c2 = oai.chat.completions.create(model=MINI, tools=tools, messages=[
        {"role": "user", "content": "Paris?"},
        {"role": "assistant", "tool_calls": [{"id": call.id, "type": "function",
                                              "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    assert c2.choices[0].message.content == "sunny"


def test_chat_json_schema(oai: openai.OpenAI, fakes: dict[str, RunningFake]) -> None:
    c = oai.chat.completions.create(model=MINI, messages=[{"role": "user", "content": "City?"}], response_format={
        "type": "json_schema", "json_schema": {"name": "w", "schema": WEATHER, "strict": True}})
    assert set(json.loads(c.choices[0].message.content or "")) == {"city"}
    assert inf(fakes["openai"]).last_body["response_format"]["json_schema"]["schema"] == WEATHER


def test_responses_plain_and_streaming(oai: openai.OpenAI, gateway: Gateway, key: str) -> None:
    r = oai.responses.create(model=MINI, input="alpha beta", instructions="Echo.")
    assert r.output_text == "alpha beta" and r.status == "completed" and r.id.startswith("gen_")
    assert r.usage is not None and r.usage.total_tokens > 0
    events = list(oai.responses.create(model=MINI, input="gamma delta", stream=True))
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "gamma delta"
    done = events[-1].response  # type: ignore[union-attr]
    assert done.output_text == "gamma delta" and done.usage is not None
    assert_books_balance(gateway, key)


def test_embeddings_and_moderations(oai: openai.OpenAI, fakes: dict[str, RunningFake], gateway: Gateway,
                                    key: str) -> None:
    e = oai.embeddings.create(model="openai/text-embedding-3-small", input=["hello world", "bye"])
    assert [d.index for d in e.data] == [0, 1] and len(e.data[0].embedding) > 0
    u = inf(fakes["openai"]).usages[-1]
    assert e.usage.prompt_tokens == u.input_tokens
    assert (e.model_extra or {})["cost_nanos"] == u.input_tokens * 20  # 0.02 USD per million
    b64 = oai.embeddings.create(model="openai/text-embedding-3-small", input="x", encoding_format="base64")
    assert len(b64.data[0].embedding) > 0  # the SDK decoded our base64 floats
    m = oai.moderations.create(model="openai/omni-moderation", input="I will kill the bomb")
    assert m.results[0].flagged and (m.model_extra or {})["cost_nanos"] == 0
    assert_books_balance(gateway, key)


def test_anthropic_sdk_to_an_openai_model(gateway: Gateway, key: str, fakes: dict[str, RunningFake]) -> None:
    client = anthropic.Anthropic(api_key=key, base_url=gateway.base_url, max_retries=0)
    msg = client.messages.create(model=MINI, max_tokens=100, system="Echo.",
                                 messages=[{"role": "user", "content": "hi from claude sdk"}])
    assert msg.content[0].text == "hi from claude sdk" and msg.stop_reason == "end_turn"  # type: ignore[union-attr]
    assert msg.usage.input_tokens > 0 and msg.id.startswith("gen_")
    sent = inf(fakes["openai"]).last_body
    assert sent["messages"][0] == {"role": "system", "content": "Echo."} and sent["max_completion_tokens"] == 100
    with client.messages.stream(model=MINI, max_tokens=100, messages=[{"role": "user", "content": "s t r"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "s t r" and final.usage.output_tokens > 0 and final.stop_reason == "end_turn"
    with pytest.raises(anthropic.NotFoundError) as e:
        client.messages.create(model="nope/nothing", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "not_found_error"  # type: ignore
    bad = anthropic.Anthropic(api_key="aistats_v1_sk_nope_nope", base_url=gateway.base_url, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model=MINI, max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert_books_balance(gateway, key)


def test_fallback_on_503_before_the_first_byte(oai: openai.OpenAI, api: httpx.Client,
                                               fakes: dict[str, RunningFake]) -> None:
    groq, together = inf(fakes["groq"]), inf(fakes["together"])
    for stream in (False, True):
        groq.fail_next, groq.fail_status = 1, 503
        before = together.request_count
        body = {"model": "meta/llama-3.3-70b", "messages": [{"role": "user", "content": "fall back"}],
                "provider": {"order": ["groq", "together"]}, "stream": stream}
        r = api.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        assert together.request_count == before + 1
        if stream:
            gen_id = json.loads(r.text.split("\n\n")[0][6:])["id"]
        else:
            assert r.json()["provider"] == "together"
            gen_id = r.json()["id"]
        rec = generation(api, gen_id)
        assert [(a["provider"], a["ok"]) for a in rec["attempts"]] == [("groq", False), ("together", True)]
        assert rec["attempts"][0]["status"] == 503 and rec["provider"] == "together"
    # no fallback allowed: the 503 reaches the client, and costs nothing
    groq.fail_next = 1
    r = api.post("/v1/chat/completions", json={**body, "stream": False,
                                               "provider": {"order": ["groq"], "allow_fallbacks": False}})
    assert r.status_code == 502 and r.json()["error"]["code"]
    # a client error is not retried elsewhere
    groq.fail_next, groq.fail_status = 1, 400
    before = together.request_count
    r = api.post("/v1/chat/completions", json={**body, "stream": False})
    assert r.status_code == 400 and together.request_count == before
    groq.fail_status = 503


def test_402_and_tpm_429_send_nothing_upstream(gateway: Gateway, fakes: dict[str, RunningFake]) -> None:
    st = inf(fakes["openai"])
    poor = gateway.client(gateway.create_key("poor", credits_usd=0))
    before = st.request_count
    r = poor.post("/v1/chat/completions", json={"model": MINI, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 402 and r.json()["error"]["code"] == "insufficient_credits"
    r = poor.post("/v1/messages", json={"model": MINI, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 402 and r.json()["type"] == "error"
    # a free model passes
    r = poor.post("/v1/moderations", json={"model": "openai/omni-moderation", "input": "hello"})
    assert r.status_code == 200, r.text
    assert st.request_count == before + 1
    limited_key = gateway.create_key("tpm", credits_usd=5)
    parsed = keys.parse(limited_key)
    assert parsed is not None

    async def set_tpm(sessions: Any) -> None:
        async with sessions() as s, s.begin():
            await s.execute(update(ApiKey).where(ApiKey.id == parsed.key_id).values(tpm_limit=40))

    db(gateway, set_tpm)
    limited = gateway.client(limited_key)
    body = {"model": MINI, "messages": [{"role": "user", "content": "a b c d e f g h i j k l"}], "max_tokens": 5}
    sent = 0
    for _ in range(10):
        r = limited.post("/v1/chat/completions", json=body)
        if r.status_code == 429:
            break
        assert r.status_code == 200, r.text
        sent += 1
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["code"] == "tokens_per_minute_exceeded"
    assert 1 <= sent < 10 and st.request_count == before + 1 + sent


def test_client_disconnect_mid_stream_is_still_charged_once(gateway: Gateway, key: str, api: httpx.Client,
                                                            fakes: dict[str, RunningFake]) -> None:
    st = inf(fakes["openai"])
    st.reply_text = " ".join(f"w{i}" for i in range(60))
    st.event_delay = 0.02
    body = {"model": MINI, "messages": [{"role": "user", "content": "long"}], "stream": True}
    with httpx.Client(base_url=gateway.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as c, \
            c.stream("POST", "/v1/chat/completions", json=body) as r:
        first = next(r.iter_lines())
    gen_id = json.loads(first[6:])["id"]
    deadline = time.monotonic() + 15
    rec = generation(api, gen_id)
    while rec["status"] == "in_progress" and time.monotonic() < deadline:
        time.sleep(0.05)
        rec = generation(api, gen_id)
    assert rec["status"] == "completed"
    u = st.usages[-1]
    assert rec["usage"]["output_tokens"] == u.output_tokens >= 60  # the whole answer was read upstream
    assert rec["cost_nanos"] == expected_nanos(u.input_tokens, u.output_tokens, u.cached_tokens) > 0

    async def settles(sessions: Any) -> int:
        async with sessions() as s:
            return int((await s.execute(select(func.count()).select_from(LedgerEntry).where(
                LedgerEntry.hold_id == f"hold_{gen_id}", LedgerEntry.kind == "settle"))).scalar() or 0)

    assert db(gateway, settles) == 1
    assert_books_balance(gateway, key)


def test_bad_requests_are_4xx(api: httpx.Client) -> None:
    for body, param in (({"model": MINI}, "messages"), ({"model": MINI, "messages": [], }, "messages"),
                        ({"model": MINI, "messages": [{"role": "user", "content": "x"}], "temperature": 9},
                         "temperature")):
        r = api.post("/v1/chat/completions", json=body)
        assert r.status_code == 400 and r.json()["error"]["param"] == param
    r = api.post("/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = api.post("/v1/chat/completions", json={"model": "nobody/none", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = api.post("/v1/embeddings", json={"model": MINI, "input": "x"})
    assert r.status_code == 400
    r = api.post("/v1/responses", json={"model": MINI})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"


def test_calls_left_open_by_a_crash_are_voided_once(gateway: Gateway, key: str) -> None:
    import datetime as dt

    from aistats_gateway.billing import service as billing
    from aistats_gateway.inference import charge

    parsed = keys.parse(key)
    assert parsed is not None
    ws = workspace_of(gateway, key)
    call = charge.Call("gen_crashed" + parsed.key_id, ws, parsed.key_id, "chat.completions", MINI, True, 12345, 0)

    async def crash(sessions: Any) -> None:
        await charge.open_call(sessions, call, tpm_tokens=0)  # the hold and the in_progress row, then "a crash"
        async with sessions() as s, s.begin():
            await s.execute(update(Generation).where(Generation.id == call.gen_id).values(
                created_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)))

    async def sweep_twice(sessions: Any) -> tuple[int, int, Any, Any]:
        import asyncio

        a, b = await asyncio.gather(charge.sweep_stale(sessions), charge.sweep_stale(sessions))
        async with sessions() as s:
            g = await s.get(Generation, call.gen_id)
            voids = (await s.execute(select(func.count()).select_from(LedgerEntry).where(
                LedgerEntry.hold_id == billing.hold_id(call.gen_id), LedgerEntry.kind == "void"))).scalar()
            return a, b, g, voids

    db(gateway, crash)
    a, b, g, voids = db(gateway, sweep_twice)
    assert a + b == 1 and g.status == "failed" and g.error_code == "interrupted" and g.cost_nanos == 0
    assert voids == 1
    assert_books_balance(gateway, key)

"""Native mode against the fake OpenAI Batch API, on both backends: the openai SDK flow with
``mode: native`` (rows uploaded as the provider's JSONL with its model id, the provider's batch
polled, its output converted back into ours, priced exactly), a create whose outcome is unknown
(the batch exists but the answer was a 500: adopted by its metadata, never submitted twice), a
create that failed (retried once) and a cancel passed on to the provider."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from aistats_gateway.providers.fakes import anthropic_batch, gemini_batch, openai_batch
from aistats_gateway.providers.fakes.testing import RunningFake
from tests.support.books import batch_books as books
from tests.support.gateway import BACKENDS, Gateway, running_gateway
from tests.test_batches_api import (
    MINI,
    TERMINAL,
    content_lines,
    jsonl,
    line,
    wait,
)

HAIKU = "anthropic/claude-haiku-4.5"
PRO = "google/gemini-3-pro"
STUDIO_KEY = "AIza-batch-test"


@pytest.fixture(scope="module")
def gemini() -> Iterator[RunningFake]:
    g = RunningFake(gemini_batch.create_app(api_key=STUDIO_KEY), prefix="")
    g.start()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AISTATS_PROVIDER_GOOGLE_AI_STUDIO_BASE_URL", g.url)
        mp.setenv("AISTATS_PROVIDER_GOOGLE_AI_STUDIO_API_KEY", STUDIO_KEY)
        yield g
    g.stop()


@pytest.fixture(scope="module")
def both(gemini: RunningFake) -> Iterator[tuple[RunningFake, RunningFake]]:
    f, a, groq = RunningFake(openai_batch.create_app()), RunningFake(anthropic_batch.create_app()), RunningFake("groq")
    for each in (f, a, groq):
        each.start()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AISTATS_PROVIDER_GROQ_BASE_URL", groq.base_url)  # a provider without a batch API here
        mp.setenv("AISTATS_PROVIDER_GROQ_API_KEY", "gsk_test")
        mp.setenv("AISTATS_PROVIDER_OPENAI_BASE_URL", f.base_url)
        mp.setenv("AISTATS_PROVIDER_OPENAI_API_KEY", "sk-test")
        mp.setenv("AISTATS_PROVIDER_ANTHROPIC_BASE_URL", a.base_url)
        mp.setenv("AISTATS_PROVIDER_ANTHROPIC_API_KEY", "sk-ant-test")
        yield f, a
    for each in (f, a, groq):
        each.stop()


@pytest.fixture(scope="module")
def fake(both: tuple[RunningFake, RunningFake]) -> RunningFake:
    return both[0]


@pytest.fixture(scope="module")
def ant(both: tuple[RunningFake, RunningFake]) -> RunningFake:
    return both[1]


@pytest.fixture(scope="module", params=BACKENDS)
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, fake: RunningFake,
       ant: RunningFake) -> Iterator[Gateway]:
    with running_gateway(request.param, tmp_path_factory.mktemp("native")) as g:
        yield g


@pytest.fixture(autouse=True)
def reset(fake: RunningFake, ant: RunningFake, gemini: RunningFake) -> None:
    for st in (fake.state, ant.state, gemini.state):
        st.fail_next_creates = st.lose_next_creates = 0
        st.polls_to_complete = 1


def fresh(gw: Gateway) -> tuple[str, httpx.Client, openai.OpenAI]:
    k = gw.create_key("native", credits_usd=10)
    return k, gw.client(k), openai.OpenAI(api_key=k, base_url=gw.base_url + "/v1", max_retries=0, timeout=60)


def provider_batches(fake: RunningFake, batch_id: str) -> list[dict[str, Any]]:
    return [b for b in fake.state.batches.values() if (b.get("metadata") or {}).get("gateway_batch_id") == batch_id]


def test_native_sdk_flow(gw: Gateway, fake: RunningFake) -> None:
    key, c, oai = fresh(gw)
    f = oai.files.create(file=("in.jsonl", io.BytesIO(jsonl([line("a", "alpha"), line("b", "beta")]))),
                         purpose="batch")
    b = oai.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                           extra_body={"mode": "native"})
    assert (b.model_extra or {})["mode"] == "native" and (b.model_extra or {})["provider"] == "openai"
    deadline = time.monotonic() + 60
    while b.status not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.1)
        b = oai.batches.retrieve(b.id)
    assert b.status == "completed", b
    [nb] = provider_batches(fake, b.id)
    sent = [json.loads(x) for x in fake.state.files[nb["input_file_id"]].data.splitlines()]
    assert [s["custom_id"] for s in sent] == ["r1", "r2"] and {s["body"]["model"] for s in sent} == {"gpt-4o-mini"}
    assert b.output_file_id
    out = [json.loads(x) for x in oai.files.content(b.output_file_id).text.splitlines()]
    assert [o["custom_id"] for o in out] == ["a", "b"]
    assert out[0]["response"]["body"]["choices"][0]["message"]["content"] == "alpha"
    settled, costs, held = books(gw, key, b.id)
    assert settled == costs > 0 and held == 0
    assert c.get(f"/v1/batches/{b.id}/requests").json()["data"][0]["provider"] == "openai"


@pytest.mark.parametrize("fault", ["lose", "fail"])
def test_unknown_or_failed_create_is_never_submitted_twice(gw: Gateway, fake: RunningFake, fault: str) -> None:
    key, c, _ = fresh(gw)
    if fault == "lose":
        fake.state.lose_next_creates = 1  # created at the provider, but the answer is a 500
    else:
        fake.state.fail_next_creates = 1  # a 500 and nothing created
    r = c.post("/v1/batches", json={"endpoint": "/v1/chat/completions", "mode": "native",
                                    "requests": [line("x", "one"), line("y", "two")]})
    assert r.status_code == 200, r.text
    b = wait(c, r.json()["id"])
    assert b["status"] == "completed" and b["request_counts"] == {"total": 2, "completed": 2, "failed": 0}
    assert len(provider_batches(fake, b["id"])) == 1
    assert [o["custom_id"] for o in content_lines(c, b["output_file_id"])] == ["x", "y"]
    settled, costs, held = books(gw, key, b["id"])
    assert settled == costs > 0 and held == 0


def test_native_cancel_reaches_the_provider(gw: Gateway, fake: RunningFake) -> None:
    key, c, _ = fresh(gw)
    fake.state.polls_to_complete = 10**9
    r = c.post("/v1/batches", json={"endpoint": "/v1/chat/completions", "mode": "native", "model": MINI,
                                    "requests": [{"custom_id": "q", "body": {
                                        "messages": [{"role": "user", "content": "hi"}]}}]})
    bid = r.json()["id"]
    deadline = time.monotonic() + 30
    while not provider_batches(fake, bid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert c.post(f"/v1/batches/{bid}/cancel").status_code == 200
    b = wait(c, bid)
    assert b["status"] == "cancelled" and provider_batches(fake, bid)[0]["status"] == "cancelled"
    errs = content_lines(c, b["error_file_id"])
    assert errs[0]["custom_id"] == "q" and errs[0]["error"]["code"] == "batch_cancelled"
    settled, costs, held = books(gw, key, bid)
    assert settled == costs == 0 and held == 0


def test_native_mode_needs_a_native_provider(gw: Gateway) -> None:
    _, c, _ = fresh(gw)
    r = c.post("/v1/batches", json={"endpoint": "/v1/chat/completions", "mode": "native",
                                    "requests": [line("z", "x", model="meta/llama-3.3-70b")]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "native_mode_unavailable", r.text


@pytest.mark.parametrize("fault", [None, "lose"])
def test_chat_batch_runs_natively_on_anthropic(gw: Gateway, ant: RunningFake, fault: str | None) -> None:
    """A /v1/chat/completions batch converted to Anthropic Message Batches and its answers back."""
    key, c, oai = fresh(gw)
    if fault:
        ant.state.lose_next_creates = 1
    before = ant.state.created
    r = c.post("/v1/batches", json={"endpoint": "/v1/chat/completions", "mode": "native", "model": HAIKU, "requests": [
        {"custom_id": "greeting/1", "body": {"messages": [{"role": "system", "content": "Be brief."},
                                                          {"role": "user", "content": "bonjour"}], "max_tokens": 30}},
        {"custom_id": "greeting/2", "body": {"messages": [{"role": "user", "content": "hola"}]}}]})
    assert r.status_code == 200, r.text
    b = oai.batches.retrieve(r.json()["id"])
    assert (b.model_extra or {})["provider"] == "anthropic"
    done = wait(c, b.id)
    assert done["status"] == "completed", done
    assert ant.state.created == before + 1  # never submitted twice
    [native_id] = [k for k, v in ant.state.requests.items() if len(v) == 2][-1:]
    sent = ant.state.requests[native_id]
    assert [r["custom_id"] for r in sent] == ["r1", "r2"]
    assert sent[0]["params"]["system"] and sent[0]["params"]["max_tokens"] == 30
    assert sent[0]["params"]["model"] != HAIKU  # the provider's own model id
    out = content_lines(c, done["output_file_id"])
    assert [o["custom_id"] for o in out] == ["greeting/1", "greeting/2"]
    body = out[0]["response"]["body"]
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"] == "bonjour"
    settled, costs, held = books(gw, key, b.id)
    assert settled == costs > 0 and held == 0


@pytest.mark.parametrize("fault", [None, "lose"])
def test_chat_batch_runs_natively_on_gemini(gw: Gateway, gemini: RunningFake, fault: str | None) -> None:
    """A /v1/chat/completions batch as a Gemini batchGenerateContent operation, found again by its
    display name when the create's answer was lost."""
    key, c, _ = fresh(gw)
    if fault:
        gemini.state.lose_next_creates = 1
    before = gemini.state.created
    r = c.post("/v1/batches", json={"endpoint": "/v1/chat/completions", "mode": "native", "model": PRO,
                                    "provider": {"only": ["google-ai-studio"]}, "requests": [
        {"custom_id": "g1", "body": {"messages": [{"role": "user", "content": "ciao"}], "max_tokens": 40}}]})
    assert r.status_code == 200, r.text
    assert r.json()["provider"] == "google-ai-studio"
    done = wait(c, r.json()["id"])
    assert done["status"] == "completed", done
    assert gemini.state.created == before + 1
    op = next(o for o in gemini.state.ops.values() if o["metadata"]["displayName"] == f"gw-{done['id']}")
    [sent] = gemini.state.requests[op["name"]]
    assert sent["metadata"] == {"key": "r1"} and sent["request"]["contents"]
    out = content_lines(c, done["output_file_id"])
    assert out[0]["custom_id"] == "g1"
    assert out[0]["response"]["body"]["choices"][0]["message"]["content"] == "ciao"
    settled, costs, held = books(gw, key, done["id"])
    assert settled == costs > 0 and held == 0

"""The fake Gemini inference routes (google-ai-studio key auth and google-vertex OAuth bearer), raw httpx:
generateContent, streamGenerateContent (SSE and JSON array), function calls, thinking, JSON schema,
embeddings, countTokens, error shapes and fault knobs."""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import google.auth.transport.requests
import httpx
import pytest
from google.oauth2 import service_account

from aistats_gateway.providers.fakes import FAKES
from aistats_gateway.providers.fakes.google import SCOPE
from aistats_gateway.providers.fakes.inference_common import count_tokens
from aistats_gateway.providers.fakes.testing import RunningFake

KEY = {"x-goog-api-key": "AIza-fake-gemini-key"}
WEATHER = [{"functionDeclarations": [{"name": "get_weather", "description": "Weather", "parameters": {
    "type": "OBJECT", "properties": {"city": {"type": "STRING"}, "days": {"type": "INTEGER"}}, "required": ["city"]}}]}]


@pytest.fixture(scope="module")
def fake() -> Iterator[RunningFake]:
    with RunningFake("google-ai-studio", prefix="") as f:
        yield f


@pytest.fixture
def state(fake: RunningFake) -> Any:
    st = fake.app.state.inference
    st.reset()
    return st


def gen(fake: RunningFake, body: dict[str, Any], model: str = "gemini-2.0-flash", verb: str = "generateContent",
        headers: dict[str, str] | None = None, query: str = "") -> httpx.Response:
    return httpx.post(f"{fake.url}/v1beta/models/{model}:{verb}{query}", json=body,
                      headers=KEY if headers is None else headers)


def user(text: str) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}]}


def test_generate_content_usage_and_key_forms(fake: RunningFake, state: Any) -> None:
    r = gen(fake, {**user("Hello, Gemini"), "systemInstruction": {"parts": [{"text": "Be nice."}]}})
    assert r.status_code == 200
    body = r.json()
    cand = body["candidates"][0]
    assert cand["content"] == {"parts": [{"text": "Hello, Gemini"}], "role": "model"} and cand["finishReason"] == "STOP"
    prompt = count_tokens("Hello, Gemini") + count_tokens("Be nice.")
    assert body["usageMetadata"]["promptTokenCount"] == prompt
    assert body["usageMetadata"]["candidatesTokenCount"] == 3
    assert body["usageMetadata"]["totalTokenCount"] == prompt + 3 and "thoughtsTokenCount" not in body["usageMetadata"]
    assert body["modelVersion"] == "gemini-2.0-flash" and body["responseId"]
    q = httpx.post(f"{fake.url}/v1beta/models/gemini-2.0-flash:generateContent?key=AIza-fake-gemini-key",
                   json={"contents": [{"parts": [{"text": "no role"}]}]})
    assert q.status_code == 200 and q.json()["candidates"][0]["content"]["parts"][0]["text"] == "no role"
    snake = gen(fake, {**user("snake"), "generation_config": {"max_output_tokens": 50}})
    assert snake.status_code == 200
    assert state.request_count == 3 and state.find(":generateContent")[0].headers["x-goog-api-key"]


def test_errors_use_google_shape(fake: RunningFake, state: Any) -> None:
    bad_key = gen(fake, user("x"), headers={"x-goog-api-key": "nope"})
    assert bad_key.status_code == 400 and bad_key.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert bad_key.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    assert gen(fake, user("x"), headers={}).json()["error"]["code"] == 403
    unknown = gen(fake, {**user("x"), "bogus": 1}).json()["error"]
    assert unknown["message"] == 'Invalid JSON payload received. Unknown name "bogus": Cannot find field.'
    assert gen(fake, {"contents": []}).json()["error"]["message"].startswith("* GenerateContentRequest.contents")
    role = gen(fake, {"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}).json()["error"]
    assert role["message"] == "Please use a valid role: user, model." and role["code"] == 400
    hot = gen(fake, {**user("x"), "generationConfig": {"temperature": 3}})
    assert hot.status_code == 400 and "temperature" in hot.json()["error"]["message"]
    pro = gen(fake, {**user("x"), "generationConfig": {"thinkingConfig": {"thinkingBudget": 0}}}, "gemini-2.5-pro")
    assert "only works in thinking mode" in pro.json()["error"]["message"]
    state.fail_next, state.fail_status, state.retry_after_seconds = 1, 429, 7
    rl = gen(fake, user("x")).json()["error"]
    assert rl["status"] == "RESOURCE_EXHAUSTED" and rl["details"][0]["retryDelay"] == "7s"
    state.fail_next, state.fail_status = 1, 503
    assert gen(fake, user("x")).json()["error"] == {"code": 503, "status": "UNAVAILABLE",
                                                    "message": "The model is overloaded. Please try again later."}
    assert gen(fake, user("fine")).status_code == 200


def test_stream_sse_framing_and_cumulative_usage(fake: RunningFake, state: Any) -> None:
    state.reply_text = "one two three four five six seven eight nine"
    with httpx.stream("POST", f"{fake.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
                      json=user("x"), headers=KEY) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    frames = raw.split("\r\n\r\n")
    assert frames[-1] == "" and all(f.startswith("data: {") for f in frames[:-1])
    chunks = [json.loads(f[6:]) for f in frames[:-1]]
    assert len(chunks) == 3
    text = "".join(p["text"] for c in chunks for p in c["candidates"][0]["content"]["parts"])
    assert text == state.reply_text
    assert [c["candidates"][0].get("finishReason") for c in chunks] == [None, None, "STOP"]
    counts = [c["usageMetadata"]["candidatesTokenCount"] for c in chunks]
    assert counts == sorted(counts) and counts[-1] == 9
    assert all(c["usageMetadata"]["thoughtsTokenCount"] == 32 for c in chunks)  # 2.5 thinks by default
    array = gen(fake, user("json array please"), verb="streamGenerateContent")
    parsed = json.loads(array.text)
    assert isinstance(parsed, list) and parsed[-1]["candidates"][0]["finishReason"] == "STOP"


def test_mid_stream_error_frame(fake: RunningFake, state: Any) -> None:
    state.reply_text = " ".join(["w"] * 12)
    state.fail_stream_after = 1
    r = gen(fake, user("x"), verb="streamGenerateContent", query="?alt=sse")
    frames = [json.loads(f[6:]) for f in r.text.split("\r\n\r\n") if f]
    assert "candidates" in frames[0] and frames[1]["error"]["status"] == "UNAVAILABLE"


def test_function_calls_and_responses(fake: RunningFake, state: Any) -> None:
    r = gen(fake, {**user("call get_weather for Oslo"), "tools": WEATHER}, model="gemini-2.5-flash").json()
    part = r["candidates"][0]["content"]["parts"][0]
    assert part["functionCall"]["name"] == "get_weather" and isinstance(part["functionCall"]["args"]["days"], int)
    assert part["thoughtSignature"]
    forced = gen(fake, {**user("anything"), "tools": WEATHER,
                        "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}).json()
    assert "functionCall" in forced["candidates"][0]["content"]["parts"][0]
    follow = gen(fake, {"tools": WEATHER, "contents": [
        user("call get_weather for Oslo")["contents"][0],
        {"role": "model", "parts": [part]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": 3}}}]}]}).json()
    assert follow["candidates"][0]["content"]["parts"][0]["text"] == '{"temp": 3}'
    missing = gen(fake, {"tools": WEATHER, "contents": [
        user("call get_weather")["contents"][0], {"role": "model", "parts": [part]}, user("hm")["contents"][0]]})
    assert "number of function response parts" in missing.json()["error"]["message"]


def test_thinking_json_schema_max_tokens_and_block(fake: RunningFake, state: Any) -> None:
    t = gen(fake, {**user("Ponder this"), "generationConfig": {"thinkingConfig": {"thinkingBudget": 1024,
                                                                                  "includeThoughts": True}}},
            model="gemini-2.5-pro").json()
    parts = t["candidates"][0]["content"]["parts"]
    assert parts[0]["thought"] is True and parts[1]["text"] == "Ponder this"
    assert t["usageMetadata"]["thoughtsTokenCount"] == 64
    assert t["usageMetadata"]["totalTokenCount"] == t["usageMetadata"]["promptTokenCount"] + 64 + 2
    schema = {"type": "OBJECT", "properties": {"name": {"type": "STRING"}, "n": {"type": "NUMBER"}},
              "required": ["name", "n"]}
    j = gen(fake, {**user("json"), "generationConfig": {"responseMimeType": "application/json",
                                                        "responseSchema": schema}}).json()
    data = json.loads(j["candidates"][0]["content"]["parts"][0]["text"])
    assert set(data) == {"name", "n"} and isinstance(data["n"], float)
    state.reply_text = "a b c d e f"
    cut = gen(fake, {**user("x"), "generationConfig": {"maxOutputTokens": 2}}).json()
    assert cut["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert cut["candidates"][0]["content"]["parts"][0]["text"] == "a b"
    state.block_words = ["forbidden"]
    blocked = gen(fake, user("a forbidden prompt")).json()
    assert blocked["promptFeedback"]["blockReason"] == "SAFETY" and "candidates" not in blocked


def test_embeddings_and_count_tokens(fake: RunningFake, state: Any) -> None:
    one = gen(fake, {"content": {"parts": [{"text": "hello world"}]}, "outputDimensionality": 64},
              model="gemini-embedding-001", verb="embedContent").json()
    assert len(one["embedding"]["values"]) == 64
    full = gen(fake, {"content": {"parts": [{"text": "hello world"}]}}, model="gemini-embedding-001",
               verb="embedContent").json()
    assert len(full["embedding"]["values"]) == 3072
    batch = gen(fake, {"requests": [{"model": "models/text-embedding-004", "content": {"parts": [{"text": t}]}}
                                    for t in ("a", "b")]}, model="text-embedding-004", verb="batchEmbedContents")
    assert [len(e["values"]) for e in batch.json()["embeddings"]] == [768, 768]
    wrong = gen(fake, {"requests": [{"model": "models/other", "content": {"parts": [{"text": "a"}]}}]},
                model="text-embedding-004", verb="batchEmbedContents")
    assert wrong.status_code == 400
    n = gen(fake, user("Hello, Gemini"), verb="countTokens").json()
    assert n["totalTokens"] == count_tokens("Hello, Gemini")


def test_vertex_generate_with_service_account_token() -> None:
    with RunningFake("google-vertex", prefix="") as fake:
        info = httpx.get(fake.url + "/_fake/service-account.json").json()
        creds = service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])  # type: ignore[no-untyped-call]
        creds.refresh(google.auth.transport.requests.Request())
        base = f"{fake.url}/v1/projects/{info['project_id']}/locations/us-central1/publishers/google/models"
        auth = {"Authorization": f"Bearer {creds.token}"}
        r = httpx.post(f"{base}/gemini-2.5-flash:generateContent", json=user("Hi Vertex"), headers=auth)
        assert r.status_code == 200 and r.json()["usageMetadata"]["trafficType"] == "ON_DEMAND"
        assert r.json()["candidates"][0]["content"]["parts"][0]["text"] == "Hi Vertex" and "createTime" in r.json()
        s = httpx.post(f"{base}/gemini-2.5-flash:streamGenerateContent?alt=sse", json=user("Hi"), headers=auth)
        assert s.text.startswith("data: {") and s.text.endswith("\r\n\r\n")
        no_role = httpx.post(f"{base}/gemini-2.5-flash:generateContent", headers=auth,
                             json={"contents": [{"parts": [{"text": "x"}]}]})
        assert no_role.json()["error"]["message"] == "Please use a valid role: user, model."
        unauth = httpx.post(f"{base}/gemini-2.5-flash:generateContent", json=user("x"),
                            headers={"Authorization": "Bearer nope"})
        assert unauth.status_code == 401 and unauth.json()["error"]["status"] == "UNAUTHENTICATED"
        other = httpx.post(f"{fake.url}/v1/projects/someone-else/locations/us-central1/publishers/google/models/"
                           "gemini-2.5-flash:generateContent", json=user("x"), headers=auth)
        assert other.status_code == 403
        assert fake.app.state.inference.request_count == 5 and "google-vertex" in FAKES


def test_openai_compatible_endpoint(fake: RunningFake, state: Any) -> None:
    from openai import OpenAI

    c = OpenAI(api_key="AIza-fake-gemini-key", base_url=fake.url + "/v1beta/openai", max_retries=0)
    r = c.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "compat"}])
    assert r.choices[0].message.content == "compat" and state.last.path == "/v1beta/openai/chat/completions"
